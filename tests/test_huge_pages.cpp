// core/huge_pages.h: the allocator behind decode's weight matrices. Large buffers are their own
// 2 MB-aligned mappings (whole huge pages from their first byte), zero-filled, usable as any
// vector storage; small ones come from operator new; the advice is accepted by the kernel.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <iostream>
#include <numeric>
#include <vector>

#include "gaincell/core/huge_pages.h"

namespace gaincell {
namespace {

bool aligned_to_huge_page(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % kHugePageBytes == 0;
}

TEST(HugePages, LargeBuffersStartOnAHugePageAndHoldTheirData) {
  // 1 MB (the threshold), 3 MB + 12 bytes (a partial last small page), 9 MB
  for (size_t floats : {size_t{1} << 18, (size_t{3} << 18) + 3, size_t{9} << 18}) {
    HugePageVector<float> v(floats);
    ASSERT_TRUE(aligned_to_huge_page(v.data())) << floats;
    for (size_t i = 0; i < floats; i += 4093) ASSERT_EQ(v[i], 0.0f) << "zero-filled";
    std::iota(v.begin(), v.end(), 0.0f);
    const HugePageVector<float> copy = v;  // a second mapping, the same contents
    ASSERT_TRUE(aligned_to_huge_page(copy.data()));
    ASSERT_NE(copy.data(), v.data());
    EXPECT_EQ(copy.back(), static_cast<float>(floats - 1));
    v.resize(floats * 2);  // grows into a new mapping, keeping the old values
    EXPECT_EQ(v[floats - 1], static_cast<float>(floats - 1));
    EXPECT_EQ(v[2 * floats - 1], 0.0f);
  }
}

TEST(HugePages, SmallBuffersUseTheOrdinaryHeap) {
  HugePageVector<uint16_t> small(1000, 7);
  EXPECT_EQ(small.size(), 1000u);
  EXPECT_EQ(small[999], 7);
  small.clear();
  small.shrink_to_fit();
  EXPECT_EQ(small.capacity(), 0u);
}

TEST(HugePages, TheKernelAcceptsTheAdviceForWholeHugePagesOnly) {
  void* p = map_huge_page_buffer(size_t{4} << 20);
  // A kernel built without transparent huge pages has no such directory and refuses the advice.
  if (std::filesystem::exists("/sys/kernel/mm/transparent_hugepage")) {
    EXPECT_TRUE(advise_huge_pages(p, size_t{4} << 20));
  } else {
    std::cout << "[ INFO ] no transparent huge pages in this kernel: advice not checked\n";
  }
  // Less than one whole aligned huge page inside the range: nothing to advise.
  EXPECT_FALSE(advise_huge_pages(static_cast<char*>(p) + 4096, kHugePageBytes));
  unmap_huge_page_buffer(p, size_t{4} << 20);
  EXPECT_THROW(map_huge_page_buffer(0), std::bad_alloc);
}

}  // namespace
}  // namespace gaincell
