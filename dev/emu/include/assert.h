// Stub in front of the C library's assert.h: assert() inside a kernel reports a launch error naming the CUDA thread
// instead of aborting the process. No include guard, like the real header: each inclusion re-applies NDEBUG.
#include_next <assert.h>
#include "cuda_emu.h"
#ifndef NDEBUG
#undef assert
#define assert(e) ((e) ? (void)0 : ::emu::detail::assert_failed(#e, __FILE__, __LINE__))
#endif
