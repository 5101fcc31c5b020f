// RETURN_IF_ERROR and ASSIGN_OR_RETURN: early return on a non-OK
// absl::Status / absl::StatusOr. Abseil 20220623 does not export these.
#ifndef VHOSTMIG_BASE_STATUS_MACROS_H_
#define VHOSTMIG_BASE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define VHOSTMIG_CONCAT_INNER(a, b) a##b
#define VHOSTMIG_CONCAT(a, b) VHOSTMIG_CONCAT_INNER(a, b)

// Evaluates `expr` (an absl::Status) and returns it from the enclosing
// function if it is not OK.
#define RETURN_IF_ERROR(expr)                            \
  do {                                                   \
    ::absl::Status vhostmig_status_ = (expr);            \
    if (!vhostmig_status_.ok()) return vhostmig_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, Foo());` evaluates Foo() (an absl::StatusOr<T>);
// on error returns its status, otherwise moves the value into `lhs`.
#define ASSIGN_OR_RETURN(lhs, expr)                                            \
  VHOSTMIG_ASSIGN_OR_RETURN_IMPL(VHOSTMIG_CONCAT(vhostmig_or_, __LINE__), lhs, \
                                 expr)

#define VHOSTMIG_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return std::move(tmp).status();       \
  lhs = std::move(tmp).value()

#endif  // VHOSTMIG_BASE_STATUS_MACROS_H_
