/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Small text helpers shared by the parsers (forward specs, policy files,
 * profiles). Pure. */
#pragma once

#include <glib.h>

/* @text made safe to quote in a message: invalid UTF-8 bytes as \xNN,
 * control characters as \uNNNN, cut after @max_bytes with "...". */
char *tg_text_printable(const char *text, gsize max_bytes);

/* A decimal number 0..max: digits only, no sign, no blanks. */
gboolean tg_text_parse_decimal(const char *text, guint64 max, guint64 *value);

/* A decimal port 0..65535: digits only, no sign, no blanks. */
gboolean tg_text_parse_port(const char *text, guint16 *port);
