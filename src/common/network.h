/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Value types for addresses and ports that every layer shares: the policy's
 * patterns, the resolver's answers and the firewall's set elements. */
#pragma once

#include <glib.h>

typedef struct {
  guint16 first;
  guint16 last; /* inclusive; "*" is 0-65535 */
} TgPortRange;

typedef struct {
  guint8 family;    /* AF_INET or AF_INET6 */
  guint8 prefix;    /* 0-32 or 0-128 */
  guint8 bytes[16]; /* network order; bits past the prefix are zero */
} TgNetwork;
