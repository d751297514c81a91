// `voxinfer batch`: many studies with one loaded model, sharded, resumable, failures isolated.
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "commands.h"
#include "voxinfer/app/batch.h"
#include "voxinfer/app/segmenter.h"
#include "voxinfer/core/error.h"
#include "voxinfer/core/threading.h"

namespace voxinfer::cli {

void add_batch_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "batch", "Segment many studies with one model: sharding, resume, a manifest, failures isolated");
  struct Args {
    std::string model, inputs, output_dir, shard = "0/1", folds, summary;
    std::int64_t shard_count = 0;
    bool resume = false, stats = false, preview = false, no_lookahead = false, disable_tta = false;
    double step_size = 0.5;
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--model,-m", a->model, "model folder of any kind voxinfer segment takes");
  cmd->add_option("--inputs", a->inputs,
                  "a text file with one input per line ('case_id<TAB>path' or 'path'; # comments), or a folder whose "
                  "entries are the inputs (files or DICOM series folders)");
  cmd->add_option("--output-dir,-o", a->output_dir,
                  "output folder: <case>.nii.gz (and _stats.json, _preview.png), manifest-I-of-N.jsonl");
  cmd->add_option("--shard", a->shard,
                  "I/N: the cases at positions I, I+N, ... of the sorted list; 'auto' reads Slurm's "
                  "SLURM_ARRAY_TASK_ID/_COUNT (or _MIN/_MAX) or Kubernetes' JOB_COMPLETION_INDEX");
  cmd->add_option("--shard-count", a->shard_count, "with --shard auto on Kubernetes: the Job's completions");
  cmd->add_flag("--resume", a->resume, "skip cases whose label map exists and whose manifest line says done");
  cmd->add_flag("--stats", a->stats, "also write <case>_stats.json");
  cmd->add_flag("--preview", a->preview, "also write <case>_preview.png");
  cmd->add_flag("--no-lookahead", a->no_lookahead, "do not read the next study while the current one runs");
  cmd->add_option("--threads", a->threads, "threads (default: VOXINFER_NUM_THREADS or all cores)");
  cmd->add_option("--folds,-f", a->folds, "nnU-Net folders: folds to ensemble, e.g. 0,1");
  cmd->add_option("--step-size", a->step_size, "nnU-Net folders: sliding-window step, in (0, 1]");
  cmd->add_flag("--disable-tta", a->disable_tta, "nnU-Net folders: no mirroring");
  cmd->add_option("--summary", a->summary,
                  "merge the manifests of an output folder into manifest.jsonl, print the counts, and exit");
  cmd->footer(
      "Exit status: 0 when every case succeeded, 4 when some failed (see the manifest), 2 bad usage or input list,\n"
      "3 invalid model. Example (a Slurm array, one process per task):\n"
      "  voxinfer batch --model MODEL --inputs cases.txt --output-dir out --shard auto --resume");
  cmd->callback([a] {
    if (!a->summary.empty()) {
      const auto counts = app::summarize_manifests(a->summary);
      for (const auto& [status, n] : counts) std::printf("%-8s %lld\n", status.c_str(), static_cast<long long>(n));
      return;
    }
    if (a->model.empty() || a->inputs.empty() || a->output_dir.empty())
      throw Error(ErrorCode::invalid_input, "batch needs --model, --inputs and --output-dir (or --summary OUT)");
    if (a->threads < 0) throw Error(ErrorCode::invalid_input, "--threads must be >= 0");
    if (!(a->step_size > 0 && a->step_size <= 1))
      throw Error(ErrorCode::invalid_input, "--step-size must be in (0, 1]");
    if (a->threads) set_num_threads(a->threads);
    app::BatchOptions bo;
    bo.output_dir = a->output_dir;
    bo.shard =
        app::parse_shard(a->shard, a->shard_count > 0 ? std::optional<std::int64_t>(a->shard_count) : std::nullopt);
    bo.resume = a->resume;
    bo.stats = a->stats;
    bo.preview = a->preview;
    bo.lookahead = !a->no_lookahead;
    bo.log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
    app::SegmenterOptions so;
    so.threads = a->threads;
    so.step_size = a->step_size;
    so.mirroring = !a->disable_tta;
    for (std::size_t p = 0; !a->folds.empty() && p <= a->folds.size();) {
      const auto q = a->folds.find(',', p);
      const std::string f = a->folds.substr(p, q == std::string::npos ? std::string::npos : q - p);
      try {
        std::size_t used = 0;
        so.folds.push_back(std::stoi(f, &used));
        if (used != f.size() || so.folds.back() < 0) throw std::invalid_argument(f);
      } catch (const std::exception&) {
        throw Error(ErrorCode::invalid_input, "--folds: '" + f + "' is not a fold number");
      }
      if (q == std::string::npos) break;
      p = q + 1;
    }
    auto seg = app::open_segmenter(a->model, so);
    const auto all =
        app::read_case_list(a->inputs, seg->channels() > 1 || seg->kind().find("nnU-Net") != std::string::npos);
    const auto mine = app::shard_cases(all, bo.shard);
    std::fprintf(stderr, "batch: %zu of %zu cases in shard %lld/%lld, model %s (%s)\n", mine.size(), all.size(),
                 static_cast<long long>(bo.shard.index), static_cast<long long>(bo.shard.count), seg->name().c_str(),
                 seg->kind().c_str());
    const auto s = app::run_batch(*seg, mine, bo);
    std::fprintf(stderr, "batch: %lld done, %lld failed, %lld skipped in %.1f s (%.0f studies per hour)\n",
                 static_cast<long long>(s.done), static_cast<long long>(s.failed), static_cast<long long>(s.skipped),
                 s.seconds, s.seconds > 0 ? 3600.0 * static_cast<double>(s.done) / s.seconds : 0.0);
    std::fflush(stderr);
    if (s.failed > 0) std::exit(4);
  });
}

}  // namespace voxinfer::cli
