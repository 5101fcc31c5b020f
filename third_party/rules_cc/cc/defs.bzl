"""Shim of @rules_cc//cc:defs.bzl: forwards to Bazel's native C++ rules.

Bazel 4.2's own @bazel_tools loads these names from @rules_cc; the real
rules_cc is not packaged by Debian, and the native rules are what it wraps.
"""

cc_binary = native.cc_binary
cc_library = native.cc_library
cc_test = native.cc_test
cc_import = native.cc_import
cc_proto_library = native.cc_proto_library
cc_toolchain = native.cc_toolchain
cc_toolchain_suite = native.cc_toolchain_suite
fdo_prefetch_hints = native.fdo_prefetch_hints
fdo_profile = native.fdo_profile
objc_library = native.objc_library
