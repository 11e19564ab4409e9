#include "gaincell/attention/attention.h"

#include <omp.h>

namespace gaincell {

void AttentionDecodeState::attend_on_team(const float* q, float* out, SpinBarrier& barrier,
                                          int threads, std::exception_ptr& error) {
  if (omp_get_thread_num() == 0) {
    try {
      attend(q, out);
    } catch (...) {
      error = std::current_exception();
    }
  }
  barrier.wait(threads);
}

}  // namespace gaincell
