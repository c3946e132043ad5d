/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Per-tunnel traffic counters: written by the tunnel's worker thread on the
 * hot path (relaxed atomic adds, no locks), read by the D-Bus thread when it
 * publishes the properties. */
#pragma once

#include <stdatomic.h>
#include <glib.h>
#include <stdint.h>

typedef struct {
  atomic_uint_least64_t bytes_sent;     /* from local clients to the server side */
  atomic_uint_least64_t bytes_received; /* from the server side to local clients */
  atomic_uint_least64_t total_connections;
  atomic_uint active_connections;
} TgCounters;

/* What one user has open over all their tunnels (or, for the daemon's
 * own, everyone), shared by those tunnels' workers and the D-Bus thread:
 * MaxConnections and MaxBuffered (DaemonMax... for the daemon's) are
 * enforced on accept against it, MaxListeners when listeners are bound. */
typedef struct {
  atomic_uint connections;
  atomic_uint max_connections; /* G_MAXUINT: no limit */
  atomic_uint listeners;
  atomic_uint_least64_t buffered;     /* bytes of relay buffers held */
  atomic_uint_least64_t max_buffered; /* G_MAXUINT64: no limit */
  atomic_int refs;
} TgUsage;

/* A usage record with no limits yet, one reference. */
static inline TgUsage *
tg_usage_new(void)
{
  TgUsage *usage = g_new0(TgUsage, 1);

  atomic_store(&usage->max_connections, G_MAXUINT);
  atomic_store(&usage->max_buffered, G_MAXUINT64);
  atomic_store(&usage->refs, 1);
  return usage;
}

/* Takes @amount of @value if that stays within @max. */
static inline gboolean
tg_usage_take(atomic_uint_least64_t *value, uint64_t max, uint64_t amount)
{
  uint64_t now = atomic_fetch_add(value, amount);

  if (max == G_MAXUINT64 || now + amount <= max)
    return TRUE;
  atomic_fetch_sub(value, amount);
  return FALSE;
}

static inline TgUsage *
tg_usage_ref(TgUsage *usage)
{
  atomic_fetch_add(&usage->refs, 1);
  return usage;
}

static inline void
tg_usage_unref(TgUsage *usage)
{
  if (usage != NULL && atomic_fetch_sub(&usage->refs, 1) == 1)
    g_free(usage);
}

static inline void
tg_counter_add(atomic_uint_least64_t *counter, uint64_t amount)
{
  atomic_fetch_add_explicit(counter, amount, memory_order_relaxed);
}

static inline uint64_t
tg_counter_get(atomic_uint_least64_t *counter)
{
  return atomic_load_explicit(counter, memory_order_relaxed);
}
