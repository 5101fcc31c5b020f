"""C++ code generation for .proto files with Debian's protoc and grpc_cpp_plugin.

Bazel 4.2's native proto rules would need protobuf's own Bazel repository,
which is not available offline; a genrule around the system protoc does the
same job. Imports are resolved relative to the workspace root, so a proto in
proto/ imports another as "proto/other.proto".
"""

def cc_proto(name, srcs, deps = [], grpc = False, visibility = None):
    """Generates and compiles C++ for `srcs`.

    Args:
      name: the cc_library to create.
      srcs: .proto files in this package.
      deps: other cc_proto targets whose protos are imported.
      grpc: also generate gRPC service stubs (*.grpc.pb.{h,cc}).
      visibility: passed to the cc_library.
    """
    stems = [s[:-len(".proto")] for s in srcs]
    outs_h = [s + ".pb.h" for s in stems]
    outs_cc = [s + ".pb.cc" for s in stems]
    if grpc:
        outs_h += [s + ".grpc.pb.h" for s in stems]
        outs_cc += [s + ".grpc.pb.cc" for s in stems]

    pkg = native.package_name()
    cmd = "protoc -I. --cpp_out=$(GENDIR) "
    if grpc:
        cmd += "--plugin=protoc-gen-grpc=$$(command -v grpc_cpp_plugin) --grpc_out=$(GENDIR) "
    cmd += " ".join(["$(location %s)" % s for s in srcs])

    native.genrule(
        name = name + "_gen",
        srcs = srcs + [d + "_srcs" for d in deps],
        outs = outs_h + outs_cc,
        cmd = cmd,
    )
    native.filegroup(
        name = name + "_srcs",
        srcs = srcs + [d + "_srcs" for d in deps],
        visibility = visibility,
    )
    lib_deps = ["//third_party:protobuf"] + deps
    if grpc:
        lib_deps.append("//third_party:grpc++")
    native.cc_library(
        name = name,
        srcs = outs_cc,
        hdrs = outs_h,
        deps = lib_deps,
        copts = ["-Wno-unused-parameter", "-Wno-array-bounds"],
        visibility = visibility,
    )
