// cooperative_groups: thread_block, tiled_partition<32> and <8>, the tile's ranks and shuffles, cg::reduce with
// cg::plus and cg::greater, block.sync().
#include <cuda_runtime.h>
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>
#include "check.h"
namespace cg = cooperative_groups;

__global__ void tile_reduce(float* out, int* ranks) {
    cg::thread_block block = cg::this_thread_block();
    cg::thread_block_tile<32> warp = cg::tiled_partition<32>(block);
    const float v = float(threadIdx.x);
    const float sum = cg::reduce(warp, v, cg::plus<float>{});
    const float mx = cg::reduce(warp, v, cg::greater<float>{});
    const float down = warp.shfl_down(v, 1);
    const float x = warp.shfl_xor(v, 2);
    warp.sync();
    block.sync();
    if (warp.thread_rank() == 0) {
        out[4 * warp.meta_group_rank() + 0] = sum;
        out[4 * warp.meta_group_rank() + 1] = mx;
    }
    if (warp.thread_rank() == 5) {
        out[4 * warp.meta_group_rank() + 2] = down;
        out[4 * warp.meta_group_rank() + 3] = x;
    }
    ranks[threadIdx.x] = int(block.thread_rank() * 1000 + warp.size() * 10 + warp.meta_group_size());
}

__global__ void tile8(int* out) {
    auto tile = cg::tiled_partition<8>(cg::this_thread_block());
    out[threadIdx.x] = cg::reduce(tile, int(threadIdx.x), cg::plus<int>{}) * 100 + int(tile.meta_group_rank());
}

int main() {
    static float out[3 * 4];
    static int ranks[96];
    LAUNCH_OK(tile_reduce, 2, 96, 0, out, ranks);
    for (int w = 0; w < 3; w++) {
        float sum = 0;
        for (int l = 0; l < 32; l++) sum += float(w * 32 + l);
        CHECK(out[4 * w] == sum, "warp %d sum %g want %g", w, out[4 * w], sum);
        CHECK(out[4 * w + 1] == float(w * 32 + 31), "warp %d max %g", w, out[4 * w + 1]);
        CHECK(out[4 * w + 2] == float(w * 32 + 6), "warp %d shfl_down %g", w, out[4 * w + 2]);
        CHECK(out[4 * w + 3] == float(w * 32 + 7), "warp %d shfl_xor %g", w, out[4 * w + 3]);
    }
    CHECK(ranks[40] == 40 * 1000 + 320 + 3, "ranks[40] = %d", ranks[40]);

    static int t8[32];
    LAUNCH_OK(tile8, 1, 32, 0, t8);
    for (int t = 0; t < 32; t++) {
        int g = t / 8, sum = 0;
        for (int k = 0; k < 8; k++) sum += g * 8 + k;
        CHECK(t8[t] == sum * 100 + g, "tile8 t=%d got %d", t, t8[t]);
    }
    return finish("coop_groups");
}
