#include "gaincell/core/huge_pages.h"

#include <sys/mman.h>

namespace gaincell {

namespace {

constexpr size_t kSmallPage = 4096;

uintptr_t round_up(uintptr_t x, size_t to) {
  return (x + to - 1) / to * to;
}

}  // namespace

void* map_huge_page_buffer(size_t bytes) {
  if (bytes == 0) throw std::bad_alloc();  // nothing to map (the allocator never asks)
  const size_t length = round_up(bytes, kSmallPage);
  if (length < bytes || length > SIZE_MAX - kHugePageBytes) throw std::bad_alloc();
  // Map 2 MB more than asked, then give back the unaligned head and the tail past the buffer, so
  // the buffer keeps its own length of address space (RLIMIT_AS); the extra 2 MB are held only
  // while it is made (estimated_model_address_space counts them once).
  void* raw = mmap(nullptr, length + kHugePageBytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t first = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t start = round_up(first, kHugePageBytes);
  const uintptr_t end = first + length + kHugePageBytes;
  if (start > first) munmap(raw, start - first);
  if (end > start + length) munmap(reinterpret_cast<void*>(start + length), end - start - length);
  advise_huge_pages(reinterpret_cast<void*>(start), length);
  return reinterpret_cast<void*>(start);
}

void unmap_huge_page_buffer(void* p, size_t bytes) {
  if (p != nullptr) munmap(p, round_up(bytes, kSmallPage));
}

bool advise_huge_pages(void* p, size_t bytes) {
#ifdef MADV_HUGEPAGE
  const uintptr_t first = reinterpret_cast<uintptr_t>(p);
  const uintptr_t start = round_up(first, kHugePageBytes);
  const uintptr_t end = (first + bytes) / kHugePageBytes * kHugePageBytes;
  if (end <= start) return false;
  return madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE) == 0;
#else
  (void)p;
  (void)bytes;
  return false;
#endif
}

}  // namespace gaincell
