// Minimal setfattr/getfattr for the test guest, whose busybox has neither.
// Linked statically so it runs in the busybox-only initramfs.
//
//   xattr_tool set PATH NAME VALUE | get PATH NAME | list PATH | remove PATH
//   NAME
//
// Errors print strerror() (so "Operation not supported" is recognisable) and
// exit 1.
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/xattr.h>

static int Fail(const char* what, const char* path) {
  fprintf(stderr, "%s %s: %s\n", what, path, strerror(errno));
  return 1;
}

int main(int argc, char** argv) {
  char buf[65536];
  if (argc == 5 && strcmp(argv[1], "set") == 0) {
    if (setxattr(argv[2], argv[3], argv[4], strlen(argv[4]), 0) != 0)
      return Fail("setxattr", argv[2]);
    return 0;
  }
  if (argc == 4 && strcmp(argv[1], "get") == 0) {
    ssize_t n = getxattr(argv[2], argv[3], buf, sizeof(buf));
    if (n < 0) return Fail("getxattr", argv[2]);
    printf("%.*s\n", (int)n, buf);
    return 0;
  }
  if (argc == 3 && strcmp(argv[1], "list") == 0) {
    ssize_t n = listxattr(argv[2], buf, sizeof(buf));
    if (n < 0) return Fail("listxattr", argv[2]);
    for (ssize_t i = 0; i < n; i += (ssize_t)strlen(buf + i) + 1)
      printf("%s\n", buf + i);
    return 0;
  }
  if (argc == 4 && strcmp(argv[1], "remove") == 0) {
    if (removexattr(argv[2], argv[3]) != 0) return Fail("removexattr", argv[2]);
    return 0;
  }
  fprintf(stderr,
          "usage: xattr_tool set PATH NAME VALUE | get PATH NAME | "
          "list PATH | remove PATH NAME\n");
  return 2;
}
