#ifndef REACTOR_WS_UNMASK_H
#define REACTOR_WS_UNMASK_H
#include <stddef.h>
#include <stdint.h>
unsigned int ws_unmask(unsigned char *buf, size_t len, uint32_t key_be, unsigned int phase);
#endif
