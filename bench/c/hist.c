#include "hist.h"

#include <math.h>
#include <string.h>

#define SUB_COUNT (1u << HIST_SUB_BITS)

void hist_reset(struct hist *h)
{
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

/* Values < 2 * SUB_COUNT map to themselves; larger ones drop `shift` low bits so the kept
 * mantissa lies in [SUB_COUNT, 2 * SUB_COUNT), and each power of two adds SUB_COUNT buckets. */
static unsigned bucket_of(uint64_t value)
{
    unsigned msb = 63u - (unsigned)__builtin_clzll(value | 1);
    unsigned shift = msb > HIST_SUB_BITS ? msb - HIST_SUB_BITS : 0;
    return (shift << HIST_SUB_BITS) + (unsigned)(value >> shift);
}

static uint64_t bucket_middle(unsigned index)
{
    unsigned shift = index < 2 * SUB_COUNT ? 0 : (index >> HIST_SUB_BITS) - 1;
    uint64_t mantissa = index - (shift << HIST_SUB_BITS);
    return (mantissa << shift) + ((1ull << shift) >> 1);
}

void hist_record(struct hist *h, uint64_t value)
{
    h->buckets[bucket_of(value)]++;
    h->count++;
    h->sum += value;
    if (value < h->min)
        h->min = value;
    if (value > h->max)
        h->max = value;
}

uint64_t hist_quantile(const struct hist *h, double q)
{
    if (h->count == 0)
        return 0;
    if (q <= 0 || q >= 1)
        return q <= 0 ? h->min : h->max; /* the extremes are kept exactly */
    uint64_t rank = (uint64_t)ceil(q * (double)h->count);
    rank = rank < 1 ? 1 : rank > h->count ? h->count : rank;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t v = bucket_middle(i);
            return v < h->min ? h->min : v > h->max ? h->max : v;
        }
    }
    return h->max;
}
