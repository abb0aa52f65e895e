//! The built-in dataset: short children's stories generated from templates, so that `train_gpt2` with no flags
//! trains offline, on a fresh machine, with nothing to download.
//!
//! The stories have real structure for a small model to find (a cast that stays consistent within a story,
//! recurring phrases, punctuation, an end marker), yet enough combinations that memorising is slower than
//! learning the patterns. They are generated from a seed, tokenized with GPT-2's BPE and separated by the
//! end-of-text token, as llm.c's TinyStories shards are.

use crate::rng::Rng;

const NAMES: &[&str] = &[
    "Lily", "Tom", "Mia", "Ben", "Sara", "Max", "Anna", "Sam", "Lucy", "Leo", "Emma", "Jack", "Zoe", "Tim", "Ella",
    "Finn",
];
const ANIMALS: &[&str] = &["cat", "dog", "bird", "frog", "bunny", "duck", "bear", "fox"];
const THINGS: &[&str] = &["ball", "kite", "hat", "boat", "book", "cake", "drum", "box", "shell", "star"];
const COLORS: &[&str] = &["red", "blue", "green", "yellow", "big", "little", "shiny", "soft"];
const PLACES: &[&str] = &["park", "garden", "forest", "beach", "house", "farm", "river", "hill"];
const FEELINGS_GOOD: &[&str] = &["happy", "glad", "proud", "excited"];
const FEELINGS_BAD: &[&str] = &["sad", "scared", "worried", "upset"];
const ACTIONS: &[&str] = &["play", "run", "jump", "sing", "dance", "read", "swim", "draw"];
const MISHAPS: &[&str] = &["rolled away", "got lost", "fell in the water", "flew up into a tree", "broke"];

fn pick<'a>(rng: &mut Rng, items: &[&'a str]) -> &'a str {
    items[rng.below(items.len())]
}

/// One story of four to eight sentences.
fn story(rng: &mut Rng) -> String {
    let hero = pick(rng, NAMES);
    let mut friend = pick(rng, NAMES);
    while friend == hero {
        friend = pick(rng, NAMES);
    }
    let (she, her) = if rng.below(2) == 0 { ("She", "her") } else { ("He", "his") };
    let thing = pick(rng, THINGS);
    let color = pick(rng, COLORS);
    let place = pick(rng, PLACES);
    let animal = pick(rng, ANIMALS);
    let action = pick(rng, ACTIONS);
    let mut s = String::new();
    s += &match rng.below(3) {
        0 => format!("Once upon a time, there was a {color} {animal} named {hero}. "),
        1 => format!("One day, {hero} went to the {place} with a {color} {thing}. "),
        _ => format!("{hero} lived near a {place}. {she} had a {color} {thing}. "),
    };
    s += &format!("{she} liked to {action} with {her} {thing} every day. ");
    if rng.below(2) == 0 {
        s += &format!("{hero} saw a {animal} in the {place}. The {animal} wanted to {action} too. ");
    }
    let mishap = pick(rng, MISHAPS);
    s += &format!("But then the {thing} {mishap}. {hero} was {}. ", pick(rng, FEELINGS_BAD));
    s += &format!("{friend} came to help. ");
    s += &match rng.below(3) {
        0 => format!("Together they found the {thing}. "),
        1 => format!("{friend} gave {hero} a new {thing}. "),
        _ => format!("They looked and looked, and at last they found the {thing} by the {place}. "),
    };
    s += &format!("\"Thank you, {friend}!\" said {hero}. {hero} felt {}. ", pick(rng, FEELINGS_GOOD));
    s += &format!("From that day on, {hero} and {friend} liked to {action} together.");
    s
}

/// `count` stories from `seed`, each one a separate document.
pub fn stories(seed: u64, count: usize) -> Vec<String> {
    let mut rng = Rng::new(seed);
    (0..count).map(|_| story(&mut rng)).collect()
}

/// Concatenates tokenized documents llm.c-style: every document is preceded by the end-of-text token, which is
/// how the model learns where one story ends and the next begins.
pub fn join_documents(docs: &[Vec<u32>], eot: u32) -> Vec<u16> {
    let mut tokens = Vec::with_capacity(docs.iter().map(|d| d.len() + 1).sum());
    for doc in docs {
        tokens.push(eot as u16);
        tokens.extend(doc.iter().map(|&t| t as u16));
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stories_are_reproducible_from_the_seed() {
        assert_eq!(stories(3, 5), stories(3, 5));
        assert_ne!(stories(3, 5), stories(4, 5));
    }

    #[test]
    fn a_story_keeps_its_cast() {
        let text = &stories(11, 1)[0];
        let hero = NAMES.iter().find(|n| text.contains(&format!("said {n}."))).expect("a hero speaks");
        assert!(text.contains(&format!("From that day on, {hero} and")), "{text}");
    }

    #[test]
    fn documents_are_separated_by_the_end_of_text_token() {
        let tokens = join_documents(&[vec![1, 2], vec![3]], 9);
        assert_eq!(tokens, [9, 1, 2, 9, 3]);
    }
}
