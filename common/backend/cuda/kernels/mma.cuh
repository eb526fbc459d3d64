// Tensor-core and async-copy helpers shared by the attention and GEMM kernels (.cu files
// only): mma.sync m16n8k16 bf16 -> fp32, ldmatrix, cp.async 16-byte copies, mbarriers, bulk
// and tensor copies, wgmma (sm_90a).
//
// Fragment layouts of mma.m16n8k16 (lane = 4 * g + t, g = lane / 4, t = lane % 4):
//   A 16x16 (row): a0 (g, 2t..2t+1)  a1 (g+8, 2t..)  a2 (g, 2t+8..)  a3 (g+8, 2t+8..)
//   B 16x8 (col):  b0 (k 2t..2t+1, n g)              b1 (k 2t+8.., n g)
//   C 16x8:        c0,c1 (g, 2t..2t+1)               c2,c3 (g+8, 2t..2t+1)
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace tandem::cuda_kernels {

__device__ __forceinline__ uint32_t SharedAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronous; `valid` false fills zeros instead of reading.
__device__ __forceinline__ void CpAsync16(void* shared, const void* global, bool valid = true) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SharedAddress(shared)),
               "l"(global), "r"(src_bytes));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// mbarrier + bulk copy (the copy engine, sm_90): a warp's tile rows land in shared memory
// and complete a transaction count on an mbarrier in the same shared memory.
__device__ __forceinline__ void MbarrierInit(uint64_t* bar, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(SharedAddress(bar)),
               "r"(arrivals));
}
// Makes initialized mbarriers visible to the copy engine (before the first copy uses them).
__device__ __forceinline__ void FenceMbarrierInit() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// One arrival that also expects `bytes` more to land before the phase completes.
__device__ __forceinline__ void MbarrierArriveExpectTx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(
                   SharedAddress(bar)),
               "r"(bytes)
               : "memory");
}
// Waits until the phase with this parity (0 for the first, 1 for the second, ...) completed.
__device__ __forceinline__ void MbarrierWait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\nWAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n}\n" ::"r"(SharedAddress(bar)),
      "r"(parity)
      : "memory");
}
// `bytes` (a multiple of 16; both addresses 16-byte aligned) global -> this block's shared
// memory through the copy engine, completing on `bar`.
__device__ __forceinline__ void BulkCopyToShared(void* shared, const void* global, uint32_t bytes,
                                                 uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
      ::"r"(SharedAddress(shared)), "l"(global), "r"(bytes), "r"(SharedAddress(bar))
      : "memory");
}
// Orders this thread's ordinary shared-memory writes before later copy-engine accesses.
__device__ __forceinline__ void FenceProxyAsyncShared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// A plain arrival (count 1) on an mbarrier.
__device__ __forceinline__ void MbarrierArrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(SharedAddress(bar)) : "memory");
}
// The box at (c0, c1) (innermost coordinate first) of a 2-D tensor map -> shared memory,
// through the copy engine, completing on `bar`; out-of-bounds elements land as zeros.
// `map` is a __grid_constant__ kernel parameter.
__device__ __forceinline__ void TmaLoad2d(void* shared, const void* map, int c0, int c1,
                                          uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3}], [%4];\n" ::"r"(SharedAddress(shared)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(SharedAddress(bar))
      : "memory");
}
// The same for a 3-D tensor map (coordinates innermost first).
__device__ __forceinline__ void TmaLoad3d(void* shared, const void* map, int c0, int c1, int c2,
                                          uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(SharedAddress(shared)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(SharedAddress(bar))
      : "memory");
}

// wgmma (sm_90a; empty elsewhere). A warpgroup (4 consecutive warps from a multiple of 4)
// issues them together; operands are read from shared memory through descriptors.
// Descriptor of a K-major bf16 tile whose rows are 128 bytes (64 elements), written by a
// 128-byte-swizzled tensor copy at a 1024-byte-aligned address: 8-row groups 1024 bytes
// apart. A 16-element k step inside the rows is the address plus 32 bytes per step.
__device__ __forceinline__ uint64_t SwizzledKMajorDescriptor(const void* tile) {
  const uint64_t address = SharedAddress(tile);
  return ((address & 0x3FFFF) >> 4) | (uint64_t{1} << 16) | (uint64_t{1024 >> 4} << 32) |
         (uint64_t{1} << 62);
}
// Descriptor of an MN-major bf16 operand (the N index contiguous: e.g. V as [token][dim] for
// O += P·V) written with the 128-byte swizzle: each 128-byte row holds 64 N elements of one
// k, 8 consecutive k rows form a 1024-byte atom; `n_chunk_bytes` apart lie the next 64 N
// elements (the leading byte offset), 1024 bytes apart the next 8 k (the stride byte offset).
__device__ __forceinline__ uint64_t SwizzledMnMajorDescriptor(const void* tile,
                                                              uint32_t n_chunk_bytes) {
  const uint64_t address = SharedAddress(tile);
  return ((address & 0x3FFFF) >> 4) | (uint64_t{(n_chunk_bytes >> 4) & 0x3FFF} << 16) |
         (uint64_t{1024 >> 4} << 32) | (uint64_t{1} << 62);
}
__device__ __forceinline__ void WgmmaFence() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void WgmmaCommit() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
// Keeps the compiler from moving reads or writes of wgmma accumulators across this point
// (it cannot see that the asynchronous products write them until WgmmaWait).
template <int kCount>
__device__ __forceinline__ void FenceAccumulators(float (&d)[kCount]) {
#pragma unroll
  for (int i = 0; i < kCount; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
template <int kPending>
__device__ __forceinline__ void WgmmaWait() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#endif
}
// The fp32 accumulator operands of a wgmma m64n64 (32: asm outputs %0..%31 of d) and
// m64n128 (64: %0..%63), as the register list in the instruction and as the output operands.
#define TANDEM_WGMMA_D32_REGS \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define TANDEM_WGMMA_D64_REGS \
  TANDEM_WGMMA_D32_REGS ", " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define TANDEM_WGMMA_D32_OUTPUTS(d) \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), \
    "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), \
    "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), \
    "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), \
    "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define TANDEM_WGMMA_D64_OUTPUTS(d) \
    TANDEM_WGMMA_D32_OUTPUTS(d), \
    "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), \
    "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), \
    "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), \
    "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), \
    "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

// acc (64 x 64 fp32, rows = A's rows) += A (64 x 16) * B (16 x 64), both bf16 K-major in
// shared memory (descriptors); accumulator layout as mma.m16n8 C per 8 columns.
__device__ __forceinline__ void WgmmaM64N64K16(float (&d)[32], uint64_t desc_a, uint64_t desc_b) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred accumulate;\nsetp.ne.b32 accumulate, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{" TANDEM_WGMMA_D32_REGS "}, %32, %33, accumulate, 1, 1, 0, 0;\n}\n"
      : TANDEM_WGMMA_D32_OUTPUTS(d)
      : "l"(desc_a), "l"(desc_b));
#endif
}
// acc (64 x 128) = A·B (scale_d 0: the old acc ignored) or acc + A·B (scale_d 1); A and B
// bf16 K-major in shared memory (descriptors).
__device__ __forceinline__ void WgmmaM64N128K16Scaled(float (&d)[64], uint64_t desc_a,
                                                      uint64_t desc_b, int scale_d) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred accumulate;\nsetp.ne.b32 accumulate, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{" TANDEM_WGMMA_D64_REGS "}, %64, %65, accumulate, 1, 1, 0, 0;\n}\n"
      : TANDEM_WGMMA_D64_OUTPUTS(d)
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
#endif
}
// acc (64 x 128 fp32, rows = A's rows) += A (64 x 16) * B (16 x 128), both bf16 K-major in
// shared memory (descriptors); accumulator layout as mma.m16n8 C per 8 columns.
__device__ __forceinline__ void WgmmaM64N128K16(float (&d)[64], uint64_t desc_a, uint64_t desc_b) {
  WgmmaM64N128K16Scaled(d, desc_a, desc_b, 1);
}
// acc (64 x 128) += A (64 x 16, registers: per warp the mma.m16n8k16 A fragment of its 16
// rows) * B (16 x 128, MN-major in shared memory: SwizzledMnMajorDescriptor).
__device__ __forceinline__ void WgmmaM64N128K16RegATransB(float (&d)[64], const uint32_t (&a)[4],
                                                          uint64_t desc_b) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred accumulate;\nsetp.ne.b32 accumulate, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{" TANDEM_WGMMA_D64_REGS "}, {%64, %65, %66, %67}, %68, accumulate, 1, 1, 1;\n}\n"
      : TANDEM_WGMMA_D64_OUTPUTS(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
#endif
}

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* shared) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(shared)));
}
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4], const void* shared) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(shared)));
}

// c += a * b (bf16 inputs, fp32 accumulators).
__device__ __forceinline__ void MmaBf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t PackBf16x2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// 2^x with one MUFU.EX2 (results below 2^-126 flush to zero). exp2f() computes the same
// approximation but scales around it to keep denormal results: three more instructions per
// call, a quarter of an attention softmax's instruction count.
__device__ __forceinline__ float FastExp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// The online softmax's rescale of accumulator tiles: rows g (c0, c1) times alpha0 and g + 8
// (c2, c3) times alpha1. Skipped when no lane of the warp has a factor other than 1 (the
// running maxima stood; x * 1 is exact, so the result is the same): call warp-uniformly.
template <int kTiles>
__device__ __forceinline__ void RescaleRows(float (&o)[kTiles][4], float alpha0, float alpha1) {
  if (!__any_sync(0xffffffffu, alpha0 != 1.0f || alpha1 != 1.0f)) return;
#pragma unroll
  for (int d = 0; d < kTiles; ++d) {
    o[d][0] *= alpha0;
    o[d][1] *= alpha0;
    o[d][2] *= alpha1;
    o[d][3] *= alpha1;
  }
}

// Max / sum over the 4 lanes that share one accumulator row (lane / 4).
__device__ __forceinline__ float QuadMax(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float QuadSum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

}  // namespace tandem::cuda_kernels

#undef TANDEM_WGMMA_D64_OUTPUTS
#undef TANDEM_WGMMA_D32_OUTPUTS
#undef TANDEM_WGMMA_D64_REGS
#undef TANDEM_WGMMA_D32_REGS
