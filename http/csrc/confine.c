/* See confine.h. Python has no openat2(); checking a path component by
 * component and then opening it by name leaves a window in which a directory
 * can be swapped for a symlink. With RESOLVE_BENEATH the kernel resolves the
 * whole path, symlinks included, and refuses (EXDEV) any step that would leave
 * dirfd: the check and the open are one atomic operation. */
#define _GNU_SOURCE
#include "confine.h"

#include <errno.h>
#include <unistd.h>
#include <sys/syscall.h>

#if defined(SYS_openat2) && __has_include(<linux/openat2.h>)
#include <linux/openat2.h>

int http_open_beneath(int dirfd, const char *path, int flags)
{
    struct open_how how = {
        .flags = (unsigned long long)flags,
        .mode = 0,
        /* Magic links (/proc/self/fd/N...) jump anywhere: never followed. */
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    return fd < 0 ? -errno : (int)fd;
}
#else
int http_open_beneath(int dirfd, const char *path, int flags)
{
    (void)dirfd;
    (void)path;
    (void)flags;
    return -ENOSYS; /* the Python walk takes over */
}
#endif
