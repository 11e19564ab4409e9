#include "gaincell/core/comm.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "gaincell/core/error.h"

#ifdef GAINCELL_HAVE_MPI
#include <mpi.h>
#endif

namespace gaincell {

namespace {

class SingleProcessComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allreduce_sum(float*, size_t) override {}
  void allreduce_sum(double*, size_t) override {}
  void broadcast(void*, size_t, int root) override {
    require(root == 0, "broadcast: root " + std::to_string(root) + " in a group of 1");
  }
  void barrier() override {}
  void start_allreduce_sum(float*, size_t) override {}
  void progress() override {}
  void wait_all() override {}
};

#ifdef GAINCELL_HAVE_MPI

// MPI counts are int: larger buffers go in pieces of this many elements.
constexpr size_t kMaxCount = size_t{1} << 30;

void check_mpi(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw Error(std::string("MPI ") + what + " failed: " + std::string(text, length) +
              " (another rank has probably stopped)");
}

class MpiComm final : public Comm {
 public:
  MpiComm() {
    check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank");
    check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &size_), "MPI_Comm_size");
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void allreduce_sum(float* data, size_t n) override { allreduce(data, n, MPI_FLOAT); }
  void allreduce_sum(double* data, size_t n) override { allreduce(data, n, MPI_DOUBLE); }

  void broadcast(void* data, size_t bytes, int root) override {
    auto* p = static_cast<char*>(data);
    for (size_t at = 0; at < bytes; at += kMaxCount) {
      const int count = static_cast<int>(std::min(kMaxCount, bytes - at));
      check_mpi(MPI_Bcast(p + at, count, MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
    }
  }

  void barrier() override { check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }

  void start_allreduce_sum(float* data, size_t n) override {
    for (size_t at = 0; at < n; at += kMaxCount) {
      const int count = static_cast<int>(std::min(kMaxCount, n - at));
      MPI_Request request;
      check_mpi(MPI_Iallreduce(MPI_IN_PLACE, data + at, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                               &request),
                "MPI_Iallreduce");
      pending_.push_back(request);
    }
  }

  void progress() override {
    if (pending_.empty()) return;
    int done = 0;
    check_mpi(
        MPI_Testall(static_cast<int>(pending_.size()), pending_.data(), &done, MPI_STATUSES_IGNORE),
        "MPI_Testall");
    if (done) pending_.clear();
  }

  void wait_all() override {
    if (pending_.empty()) return;
    const int code =
        MPI_Waitall(static_cast<int>(pending_.size()), pending_.data(), MPI_STATUSES_IGNORE);
    pending_.clear();
    check_mpi(code, "MPI_Waitall");
  }

 private:
  void allreduce(void* data, size_t n, MPI_Datatype type) {
    int type_size = 0;
    MPI_Type_size(type, &type_size);
    auto* p = static_cast<char*>(data);
    for (size_t at = 0; at < n; at += kMaxCount) {
      const int count = static_cast<int>(std::min(kMaxCount, n - at));
      check_mpi(
          MPI_Allreduce(MPI_IN_PLACE, p + at * type_size, count, type, MPI_SUM, MPI_COMM_WORLD),
          "MPI_Allreduce");
    }
  }

  int rank_ = 0, size_ = 1;
  std::vector<MPI_Request> pending_;
};

#endif  // GAINCELL_HAVE_MPI

std::unique_ptr<Comm>& world_slot() {
  static std::unique_ptr<Comm> comm = make_single_process_comm();
  return comm;
}

bool& mpi_joined() {
  static bool joined = false;
  return joined;
}

}  // namespace

std::unique_ptr<Comm> make_single_process_comm() {
  return std::make_unique<SingleProcessComm>();
}

Comm& world_comm() {
  return *world_slot();
}

bool comm_has_mpi() {
#ifdef GAINCELL_HAVE_MPI
  return true;
#else
  return false;
#endif
}

int launcher_world_size() {
  // Open MPI's mpirun, then the PMI of MPICH's Hydra and of Slurm's srun --mpi=pmi2.
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    const char* value = std::getenv(name);
    if (value == nullptr || *value == '\0') continue;
    char* end = nullptr;
    const long n = std::strtol(value, &end, 10);
    if (*end == '\0' && n > 0 && n <= INT_MAX) return static_cast<int>(n);
  }
  return 0;
}

void init_world_comm(int* argc, char*** argv) {
  const int launched = launcher_world_size();
  if (launched == 0) return;  // an ordinary process: stays single
#ifdef GAINCELL_HAVE_MPI
  int provided = 0;
  // Only the main thread calls MPI (OpenMP threads compute between the calls).
  check_mpi(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  mpi_joined() = true;
  // Errors come back as codes (then an Error and abort_world_comm) instead of killing the job
  // from inside the library with MPI's own message.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  world_slot() = std::make_unique<MpiComm>();
#else
  require(launched == 1, "this gaincell was built without MPI, but an MPI launcher started it as " +
                             std::to_string(launched) +
                             " processes: install libopenmpi-dev and rebuild (CMake finds MPI), "
                             "or run it without mpirun");
#endif
}

void finalize_world_comm() {
#ifdef GAINCELL_HAVE_MPI
  if (!mpi_joined()) return;
  mpi_joined() = false;
  world_slot() = make_single_process_comm();
  MPI_Finalize();
#endif
}

void abort_world_comm(int code) {
#ifdef GAINCELL_HAVE_MPI
  if (mpi_joined()) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

}  // namespace gaincell
