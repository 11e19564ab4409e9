// Process group of a data-parallel run (issue 16): the few collectives that training and
// adaptation need, behind an interface so that the rest of the library never includes <mpi.h>.
//
// world_comm() is a single process (rank 0 of 1) until init_world_comm() finds that the process
// was started by mpirun; with MPI compiled in (CMake's FindMPI: GAINCELL_HAVE_MPI) it is then
// MPI_COMM_WORLD. A binary built without MPI refuses to run under a launcher with more than one
// process (every rank would train alone and write the same files).
//
// Collectives must be called by every rank in the same order. Errors (a rank gone, a broken
// connection) are thrown as gaincell::Error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace gaincell {

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  bool is_root() const { return rank() == 0; }

  // In place: data[i] becomes the sum over ranks. The same bits on every rank.
  virtual void allreduce_sum(float* data, size_t n) = 0;
  virtual void allreduce_sum(double* data, size_t n) = 0;
  // Copies root's `bytes` bytes at `data` to every rank.
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  virtual void barrier() = 0;

  // Non-blocking in-place sum of floats (a gradient bucket): starts it and returns at once.
  // `data` must stay untouched until wait_all(). progress() lets the library move outstanding
  // operations on (MPI progresses only inside MPI calls); wait_all() completes them all.
  virtual void start_allreduce_sum(float* data, size_t n) = 0;
  virtual void progress() = 0;
  virtual void wait_all() = 0;
};

// The process-wide group (see above). Never null.
Comm& world_comm();

// Called once at the start of main(): joins the MPI job when the environment says an MPI
// launcher started this process. Throws an Error when it did so with more than one process and
// this binary has no MPI.
void init_world_comm(int* argc, char*** argv);
// Leaves the MPI job (no-op without one). Call once, on success, from every rank.
void finalize_world_comm();
// Ends every rank of the job with `code` (MPI_Abort): a rank that fails alone must not leave
// the others waiting in a collective.
[[noreturn]] void abort_world_comm(int code);

// Whether this binary was built with MPI.
bool comm_has_mpi();
// The number of processes an MPI launcher says it started (OMPI_COMM_WORLD_SIZE, PMI_SIZE,
// PMIX_SIZE...); 0 when none did. Exposed for tests.
int launcher_world_size();

// A single process: the collectives are copies (or nothing).
std::unique_ptr<Comm> make_single_process_comm();

}  // namespace gaincell
