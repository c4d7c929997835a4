/*
 * Our own declarations of the CUDA driver API subset the interception library
 * hooks, written from NVIDIA's driver API reference so the library (and the
 * fake driver in tests) build without the toolkit's cuda.h, whose macros
 * rename symbols (cuMemAlloc -> cuMemAlloc_v2, cuGetProcAddress ->
 * cuGetProcAddress_v2) in ways an interposer must control itself.
 */
#ifndef APT_VGPU_INTERCEPT_CUDA_DRIVER_API_H
#define APT_VGPU_INTERCEPT_CUDA_DRIVER_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef unsigned long long CUmemGenericAllocationHandle;
typedef unsigned long long cuuint64_t;
typedef struct CUctx_st* CUcontext;
typedef struct CUstream_st* CUstream;
typedef struct CUevent_st* CUevent;
typedef struct CUfunc_st* CUfunction;
typedef struct CUarray_st* CUarray;
typedef struct CUmipmappedArray_st* CUmipmappedArray;
typedef struct CUgraphExec_st* CUgraphExec;
typedef struct CUmemPoolHandle_st* CUmemoryPool;
typedef struct CUmemAllocationProp_st CUmemAllocationProp; /* opaque here: passed through */
typedef struct CUlaunchAttribute_st CUlaunchAttribute;     /* opaque here: passed through */
typedef struct CUexecAffinityParam_st CUexecAffinityParam; /* opaque here: passed through */
typedef struct CUctxCreateParams_st CUctxCreateParams;     /* opaque here: passed through */
typedef int CUdriverProcAddressQueryResult;

enum {
  CUDA_SUCCESS = 0,
  CUDA_ERROR_INVALID_VALUE = 1,
  CUDA_ERROR_OUT_OF_MEMORY = 2,
  CUDA_ERROR_NOT_INITIALIZED = 3,
  CUDA_ERROR_INVALID_CONTEXT = 201,
  CUDA_ERROR_INVALID_HANDLE = 400,
  CUDA_ERROR_NOT_FOUND = 500,
  CUDA_ERROR_NOT_READY = 600,
  CUDA_ERROR_UNKNOWN = 999
};

enum { CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM = 2 };

typedef struct {
  size_t Width;
  size_t Height;
  int Format; /* CUarray_format */
  unsigned int NumChannels;
} CUDA_ARRAY_DESCRIPTOR;

typedef struct {
  size_t Width;
  size_t Height;
  size_t Depth;
  int Format;
  unsigned int NumChannels;
  unsigned int Flags;
} CUDA_ARRAY3D_DESCRIPTOR;

typedef struct {
  unsigned int gridDimX, gridDimY, gridDimZ;
  unsigned int blockDimX, blockDimY, blockDimZ;
  unsigned int sharedMemBytes;
  CUstream hStream;
  CUlaunchAttribute* attrs;
  unsigned int numAttrs;
} CUlaunchConfig;

#ifdef __cplusplus
}
#endif

/*
 * Every hooked entry point, once: X(exported symbol, base name for
 * cuGetProcAddress, return type, parameter list, argument list). Several
 * versions of one base name (cuCtxCreate_v2/_v3/_v4) are told apart by the
 * pointer the driver's cuGetProcAddress answers with.
 * The interposer's wrappers, its table of real functions, the dlsym and
 * cuGetProcAddress redirection and the exported-symbol map all come from here.
 */
#define VGPU_CUDA_HOOKS(X)                                                                                         \
  X(cuInit, "cuInit", CUresult, (unsigned int flags), (flags))                                                     \
  X(cuMemAlloc_v2, "cuMemAlloc", CUresult, (CUdeviceptr * dptr, size_t bytes), (dptr, bytes))                      \
  X(cuMemAllocPitch_v2, "cuMemAllocPitch", CUresult,                                                               \
    (CUdeviceptr * dptr, size_t * pitch, size_t width, size_t height, unsigned int element),                      \
    (dptr, pitch, width, height, element))                                                                          \
  X(cuMemAllocManaged, "cuMemAllocManaged", CUresult, (CUdeviceptr * dptr, size_t bytes, unsigned int flags),      \
    (dptr, bytes, flags))                                                                                           \
  X(cuMemAllocAsync, "cuMemAllocAsync", CUresult, (CUdeviceptr * dptr, size_t bytes, CUstream stream),             \
    (dptr, bytes, stream))                                                                                          \
  X(cuMemAllocFromPoolAsync, "cuMemAllocFromPoolAsync", CUresult,                                                  \
    (CUdeviceptr * dptr, size_t bytes, CUmemoryPool pool, CUstream stream), (dptr, bytes, pool, stream))           \
  X(cuMemFree_v2, "cuMemFree", CUresult, (CUdeviceptr dptr), (dptr))                                               \
  X(cuMemFreeAsync, "cuMemFreeAsync", CUresult, (CUdeviceptr dptr, CUstream stream), (dptr, stream))               \
  X(cuMemCreate, "cuMemCreate", CUresult,                                                                          \
    (CUmemGenericAllocationHandle * handle, size_t bytes, const CUmemAllocationProp* prop,                         \
     unsigned long long flags),                                                                                     \
    (handle, bytes, prop, flags))                                                                                   \
  X(cuMemRelease, "cuMemRelease", CUresult, (CUmemGenericAllocationHandle handle), (handle))                       \
  X(cuMemMap, "cuMemMap", CUresult,                                                                                \
    (CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle, unsigned long long flags),  \
    (ptr, size, offset, handle, flags))                                                                             \
  X(cuMemUnmap, "cuMemUnmap", CUresult, (CUdeviceptr ptr, size_t size), (ptr, size))                              \
  X(cuArrayCreate_v2, "cuArrayCreate", CUresult, (CUarray * array, const CUDA_ARRAY_DESCRIPTOR* desc),             \
    (array, desc))                                                                                                  \
  X(cuArray3DCreate_v2, "cuArray3DCreate", CUresult, (CUarray * array, const CUDA_ARRAY3D_DESCRIPTOR* desc),       \
    (array, desc))                                                                                                  \
  X(cuArrayDestroy, "cuArrayDestroy", CUresult, (CUarray array), (array))                                          \
  X(cuMipmappedArrayCreate, "cuMipmappedArrayCreate", CUresult,                                                    \
    (CUmipmappedArray * array, const CUDA_ARRAY3D_DESCRIPTOR* desc, unsigned int levels), (array, desc, levels))   \
  X(cuMipmappedArrayDestroy, "cuMipmappedArrayDestroy", CUresult, (CUmipmappedArray array), (array))              \
  X(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", CUresult, (CUcontext * context, CUdevice device),        \
    (context, device))                                                                                              \
  X(cuDevicePrimaryCtxRelease_v2, "cuDevicePrimaryCtxRelease", CUresult, (CUdevice device), (device))              \
  X(cuDevicePrimaryCtxReset_v2, "cuDevicePrimaryCtxReset", CUresult, (CUdevice device), (device))                  \
  X(cuCtxCreate_v2, "cuCtxCreate", CUresult, (CUcontext * context, unsigned int flags, CUdevice device),           \
    (context, flags, device))                                                                                       \
  X(cuCtxCreate_v3, "cuCtxCreate", CUresult,                                                                       \
    (CUcontext * context, CUexecAffinityParam * affinity, int affinities, unsigned int flags, CUdevice device),    \
    (context, affinity, affinities, flags, device))                                                                 \
  X(cuCtxCreate_v4, "cuCtxCreate", CUresult,                                                                       \
    (CUcontext * context, CUctxCreateParams * create_params, unsigned int flags, CUdevice device),                 \
    (context, create_params, flags, device))                                                                        \
  X(cuCtxDestroy_v2, "cuCtxDestroy", CUresult, (CUcontext context), (context))                                     \
  X(cuMemGetInfo_v2, "cuMemGetInfo", CUresult, (size_t * free_bytes, size_t * total_bytes), (free_bytes, total_bytes)) \
  X(cuLaunchKernel, "cuLaunchKernel", CUresult,                                                                    \
    (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by,            \
     unsigned int bz, unsigned int shared, CUstream stream, void** params, void** extra),                          \
    (f, gx, gy, gz, bx, by, bz, shared, stream, params, extra))                                                     \
  X(cuLaunchKernelEx, "cuLaunchKernelEx", CUresult,                                                                \
    (const CUlaunchConfig* config, CUfunction f, void** params, void** extra), (config, f, params, extra))         \
  X(cuLaunchCooperativeKernel, "cuLaunchCooperativeKernel", CUresult,                                              \
    (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by,            \
     unsigned int bz, unsigned int shared, CUstream stream, void** params),                                        \
    (f, gx, gy, gz, bx, by, bz, shared, stream, params))                                                            \
  X(cuGraphLaunch, "cuGraphLaunch", CUresult, (CUgraphExec graph, CUstream stream), (graph, stream))

#endif /* APT_VGPU_INTERCEPT_CUDA_DRIVER_API_H */
