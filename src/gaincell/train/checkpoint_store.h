// Atomic training checkpoints in an output directory (issue 17 item 2). Layout of OUT:
//   checkpoints/step-<N>/   one complete checkpoint each (config.json, model.safetensors,
//                           training_state.bin, training_state.json: trainer.h)
//   latest -> checkpoints/step-<N>         the current one, switched by renaming a new symlink
//   config.json, model.safetensors,        links through `latest`, so OUT itself stays a model
//   training_state.{bin,json} -> latest/.. directory (load_model, Hugging Face, the CLI)
//   .lock                                  DirectoryLock of the process writing OUT
// A checkpoint is written into `checkpoints/step-<N>.tmp.<pid>/`, synced, renamed into place,
// and only then does `latest` move and the previous checkpoint go. A kill at any moment leaves
// `latest` on a complete checkpoint (or no checkpoint before the first commit); the temporary
// directories it leaves are removed by the next start (prepare_checkpoint_dir).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>

namespace gaincell {

// Removes stale temporaries from OUT and OUT/checkpoints. Call while holding OUT's lock.
void prepare_checkpoint_dir(const std::filesystem::path& out);

// After resuming from `resumed` (find_resumable_checkpoint's result): when that is the checkpoint
// `latest` names, removes the others, as the commit of `latest` would have had a kill not stopped
// it. A run resumed at its last step commits nothing, so it would otherwise leave them. Nothing
// when `resumed` is not `latest` (a damaged `latest`: the older ones are the fallbacks).
void remove_superseded_checkpoints(const std::filesystem::path& out,
                                   const std::filesystem::path& resumed);

// Writes a checkpoint with `write_files(tmp_dir)` and commits it as OUT's latest. Returns the
// committed directory. Throws (leaving the previous checkpoint current) when writing fails.
std::filesystem::path commit_checkpoint(
    const std::filesystem::path& out, int64_t step,
    const std::function<void(const std::filesystem::path&)>& write_files);

// Checks one checkpoint directory: its step when complete, else an Error naming the problem.
using CheckpointVerifier = std::function<int64_t(const std::filesystem::path&)>;

// The checkpoint a resume of OUT reads: `latest` when it is complete (the commit point; also
// what load_model(OUT) reads), else the complete OUT/checkpoints/step-* of the highest step
// (`latest` damaged by hand), else OUT itself when it holds the files of the single-directory
// layout of earlier versions. Throws an Error with the problem of `latest` (or of OUT) when
// there is none.
std::filesystem::path find_resumable_checkpoint(const std::filesystem::path& out,
                                                const CheckpointVerifier& verify);

}  // namespace gaincell
