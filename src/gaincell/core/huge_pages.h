// Large buffers backed by transparent huge pages (2 MB) where the kernel offers them.
//
// Decode streams every weight once per token. With 4 KB pages that is a page-table walk every
// 4 KB and, for the hardware prefetchers, which stop at 4 KB boundaries, a new stream every 4 KB.
// Where transparent huge pages are set to "madvise" (the development VM) a buffer gets them only
// when asked (madvise MADV_HUGEPAGE) before it is first written. Measured on that VM with glibc's
// own switch for it (GLIBC_TUNABLES=glibc.malloc.hugetlb=1), `bench_gemv --model gpt2 --rounds
// 5`, alternated twice: the bf16 products over GPT-2's matrices from 33.7-34.3 to 35.5-36.2 GB/s,
// q8 from 30.9-32.8 to 33.9-34.6. Where they are "always" this changes nothing, and where "never"
// the kernel ignores the advice.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace gaincell {

inline constexpr size_t kHugePageBytes = size_t{2} << 20;

// Buffers from this size on are mapped on their own, 2 MB-aligned, and advised; smaller ones come
// from operator new (a huge page would mostly hold other data).
inline constexpr size_t kHugePageMinBytes = size_t{1} << 20;

// A private anonymous mapping of `bytes` (> 0, rounded up to 4 KB) that starts on a 2 MB
// boundary, advised for huge pages; zero-filled. Throws std::bad_alloc when the kernel refuses
// it.
void* map_huge_page_buffer(size_t bytes);
void unmap_huge_page_buffer(void* p, size_t bytes);

// Advises the whole 2 MB pages inside [p, p + bytes) (memory not yet written: calloc's fresh
// mappings). Returns false when the kernel rejected the advice (no transparent huge pages).
bool advise_huge_pages(void* p, size_t bytes);

template <class T>
struct HugePageAllocator {
  using value_type = T;
  HugePageAllocator() = default;
  template <class U>
  HugePageAllocator(const HugePageAllocator<U>&) noexcept {}  // NOLINT: rebinding is implicit

  T* allocate(size_t n) {
    if (n > SIZE_MAX / sizeof(T)) throw std::bad_alloc();
    const size_t bytes = n * sizeof(T);
    if (bytes < kHugePageMinBytes) return static_cast<T*>(::operator new(bytes));
    return static_cast<T*>(map_huge_page_buffer(bytes));
  }
  void deallocate(T* p, size_t n) noexcept {
    const size_t bytes = n * sizeof(T);
    if (bytes < kHugePageMinBytes) {
      ::operator delete(p);
    } else {
      unmap_huge_page_buffer(p, bytes);
    }
  }
  template <class U>
  bool operator==(const HugePageAllocator<U>&) const noexcept {
    return true;
  }
};

// A std::vector whose large storage is huge-page backed (the weight matrices of decode).
template <class T>
using HugePageVector = std::vector<T, HugePageAllocator<T>>;

}  // namespace gaincell
