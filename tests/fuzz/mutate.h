/* The byte mutator of the sanitizer drivers (head_sanitized.c, upgrade_sanitized.c): a fixed
 * PRNG, so a failure reproduces, and 0-4 random edits of a seed, then a random cut half of
 * the time. */
#ifndef FUZZ_MUTATE_H
#define FUZZ_MUTATE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t mutate_state = 0x9E3779B97F4A7C15u;

static uint32_t next(uint32_t bound)
{
    mutate_state ^= mutate_state << 13;
    mutate_state ^= mutate_state >> 7;
    mutate_state ^= mutate_state << 17;
    return (uint32_t)(mutate_state % bound);
}

/* Copies `seed` into `out` (room for `max` bytes), mutates it; returns the new length. */
static size_t mutate(const char *seed, unsigned char *out, size_t max)
{
    size_t len = strlen(seed);
    memcpy(out, seed, len);
    for (uint32_t edits = next(5); edits > 0; edits--) {
        size_t at = next((uint32_t)len + 1);
        uint32_t op = next(3);

        if (op == 0 && at < len) { /* replace */
            out[at] = (unsigned char)next(256);
        } else if (op == 1 && len < max) { /* insert */
            memmove(out + at + 1, out + at, len - at);
            out[at] = (unsigned char)next(256);
            len++;
        } else if (op == 2 && at < len) { /* delete */
            memmove(out + at, out + at + 1, len - at - 1);
            len--;
        }
    }
    return next(2) ? next((uint32_t)len + 1) : len;
}

/* A heap block of exactly `len` bytes (1 if 0) holding `bytes` (or nothing when NULL), so that
 * ASan catches a read one byte past the end. Exits with status 2 when out of memory. */
static unsigned char *exact_block(const unsigned char *bytes, size_t len)
{
    unsigned char *block = malloc(len ? len : 1);

    if (block == NULL)
        exit(2);
    if (bytes != NULL)
        memcpy(block, bytes, len);
    return block;
}

#endif
