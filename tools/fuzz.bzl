"""Fuzz targets that are ordinary tests under GCC and libFuzzer binaries under clang.

A fuzz target is a plain source defining

    extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

(and optionally LLVMFuzzerInitialize). `cc_fuzz_target(name = "foo", ...)`
creates:

  foo            cc_test: the target linked with tests/fuzz/replay_main.cc,
                 replaying every corpus file plus a fixed-seed batch of
                 mutations. Part of `bazel test //...` and of the sanitizer
                 runs, so a corpus input that once crashed stays fixed.
  foo_libfuzzer  cc_binary for `--config=fuzz` (clang, libFuzzer, ASan and
                 UBSan); tagged manual (it has no main() without
                 -fsanitize=fuzzer) and libfuzzer, which tools/test.sh
                 looks for to give each a short run.
  foo_corpus     filegroup of the corpus; foo_corpus.txt lists its paths.

See docs/testing.md for how the clang build is selected.
"""

def cc_fuzz_target(name, srcs, deps = [], corpus = [], copts = [], size = "small", tags = [], env = {}, **kwargs):
    """Declares a fuzz target, its replay test and its libFuzzer binary.

    Args:
      name: name of the replay test; the libFuzzer binary is name + "_libfuzzer".
      srcs: sources; exactly one defines LLVMFuzzerTestOneInput.
      deps: libraries under test.
      corpus: seed inputs (files, globs or filegroups).
      copts: extra compiler options for both builds.
      size: size of the replay test.
      tags: extra tags for the replay test.
      env: environment of the replay test (e.g. FUZZ_REPLAY_MUTATIONS).
      **kwargs: passed to both rules (e.g. visibility).
    """
    native.filegroup(
        name = name + "_corpus",
        srcs = corpus,
    )
    native.genrule(
        name = name + "_corpus_list",
        srcs = [":" + name + "_corpus"],
        outs = [name + "_corpus.txt"],
        cmd = "for f in $(SRCS); do echo $$f; done > $@",
        tags = ["manual"],
    )
    native.cc_test(
        name = name,
        # The replay driver is compiled into each test (a source label, not a
        # library: tests/fuzz's BUILD file belongs to the fuzz targets).
        srcs = srcs + ["//tests/fuzz:replay_main.cc"],
        deps = deps,
        copts = copts,
        data = [":" + name + "_corpus"],
        args = ["$(locations :%s_corpus)" % name] if corpus else [],
        size = size,
        env = env,
        tags = tags + ["fuzz_replay"],
        **kwargs
    )
    native.cc_binary(
        name = name + "_libfuzzer",
        srcs = srcs,
        deps = deps,
        copts = copts,
        data = [":" + name + "_corpus"],
        tags = ["manual", "libfuzzer"],
        **kwargs
    )
