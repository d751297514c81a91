// voxinfer: command line for 3D medical image inference. Exit status: 0 success,
// 2 bad usage or bad input, 3 invalid or unsupported model, 1 internal error.
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <exception>
#include <iostream>
#include <new>

#include "commands.h"
#include "voxinfer/core/cpu.h"
#include "voxinfer/core/error.h"
#include "voxinfer/core/threading.h"
#include "voxinfer/version.h"

int main(int argc, char** argv) {
  CLI::App app{
      "voxinfer: fast CPU inference for 3D medical images.\n"
      "Reads a DICOM series or a NIfTI/NRRD/MHA volume, runs an ONNX (or TF.js/Keras) network\n"
      "patch by patch and writes the result in the patient's original geometry.\n"
      "Run 'voxinfer COMMAND --help' for the options of each command.",
      "voxinfer"};
  app.require_subcommand(1);
  app.set_version_flag("--version", [] {
    return std::string("voxinfer ") + VOXINFER_VERSION_STRING + " (kernels: " + voxinfer::isa_name(voxinfer::active_isa()) +
           ", cpu: " + voxinfer::isa_name(voxinfer::hardware_isa()) + ", threads: " +
           std::to_string(voxinfer::num_threads()) + ")";
  });
  app.footer(
      "Environment: VOXINFER_NUM_THREADS (default threads), VOXINFER_MAX_ISA=generic|avx2|avx512 (kernel cap),\n"
      "VOXINFER_KERNELS=reference (plain reference convolution loops, to check results; many times slower).\n"
      "Exit status: 0 ok, 2 bad usage or input, 3 invalid or unsupported model, 4 a batch where some cases failed,\n"
      "1 internal error.");
  voxinfer::cli::add_info_command(app);
  voxinfer::cli::add_run_command(app);
  voxinfer::cli::add_bench_command(app);
  voxinfer::cli::add_convert_command(app);
  voxinfer::cli::add_segment_command(app);
  voxinfer::cli::add_classify_command(app);
  voxinfer::cli::add_batch_command(app);
  voxinfer::cli::add_serve_command(app);
  voxinfer::cli::add_models_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version are "errors" with exit code 0.
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  } catch (const voxinfer::Error& e) {
    std::fprintf(stderr, "voxinfer: error: %s\n", e.what());
    return voxinfer::exit_status(e.code());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "voxinfer: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "voxinfer: internal error: %s\n", e.what());
    return 1;
  }
  return 0;
}
