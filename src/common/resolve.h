/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Names to addresses for the firewall's sets (PermitServer names,
 * ServerPermitOpen names). Blocks: call it where waiting is allowed. */
#pragma once

#include <glib.h>

#include "network.h"

/* Appends every IPv4 and IPv6 address of @name (a name, or an address as
 * text) to @networks as a full-length TgNetwork; FALSE when it does not
 * resolve. */
gboolean tg_resolve_networks(const char *name, GArray *networks);
