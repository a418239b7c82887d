/* A log-linear latency histogram (the HdrHistogram idea, simplified): values below 128 get a
 * bucket each, larger ones keep their top 7 significant bits, so every recorded value is known to
 * within 1/64 (1.6%) while the whole table is a fixed 30 KiB, whatever the run length. */
#ifndef BENCH_HIST_H
#define BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 6 /* 64 sub-buckets per power of two: relative error <= 1/64 */
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) << HIST_SUB_BITS) /* covers every uint64 value */

struct hist {
    uint64_t count, sum, min, max;
    uint64_t buckets[HIST_BUCKETS];
};

void hist_reset(struct hist *h);
void hist_record(struct hist *h, uint64_t value);
/* The value at quantile q: the middle of its bucket, clipped to [min, max]; exact min at q <= 0
 * and exact max at q >= 1. */
uint64_t hist_quantile(const struct hist *h, double q);

#endif
