/* Opening a file confined to a directory, by the kernel (see confine.c). */
#ifndef REACTOR_HTTP_CONFINE_H
#define REACTOR_HTTP_CONFINE_H

/* openat2(dirfd, path, {flags, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS}):
 * the new fd, or -errno (-ENOSYS where the kernel or headers lack openat2). */
int http_open_beneath(int dirfd, const char *path, int flags);
#endif
