/*
 * Failed-login limiter: counts refused logins per key (a source address, a username) in a
 * fixed window; once a key reaches its limit, logins for it are refused in the plugin, without
 * an HTTP call, until the window ends. Memory is bounded by max_entries per table.
 */
#ifndef AUTH_HTTP_LIMITER_H
#define AUTH_HTTP_LIMITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define LIMITER_BUCKETS 1024

struct limiter_entry {
	struct limiter_entry *next;
	char *key;
	uint64_t hash;
	time_t window_end;
	unsigned long failures;
};

struct limiter {
	struct limiter_entry *buckets[LIMITER_BUCKETS];
	size_t count;
	size_t max_entries;
	unsigned long max_failures; /* 0: off */
	long window;                /* seconds */
	unsigned long refused;      /* logins refused while tripped, for the log */
};

void limiter_init(struct limiter *l, unsigned long max_failures, long window, size_t max_entries);
void limiter_clear(struct limiter *l);
/* True when `key` reached its limit in the current window. */
bool limiter_tripped(struct limiter *l, const char *key, time_t now);
/* One more refused login for `key`; true when this one trips it. */
bool limiter_fail(struct limiter *l, const char *key, time_t now);
/* The right secret was shown: forget `key`'s failures. */
void limiter_forget(struct limiter *l, const char *key);

#endif
