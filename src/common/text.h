/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Text helpers: the one place that decides what a control character is and
 * how text from outside is shown (parsers, D-Bus arguments, the log).
 * Pure. */
#pragma once

#include <glib.h>

/* @text made safe to quote in a message: invalid UTF-8 bytes as \xNN,
 * control characters as \uNNNN, cut after @max_bytes with "...". */
char *tg_text_printable(const char *text, gsize max_bytes);

/* The first control character (C0, DEL or C1) in the first @length bytes
 * of @text (-1: up to its NUL), which must be valid UTF-8; characters in
 * @allowed (ASCII, may be NULL) do not count. NULL when there is none; *c
 * (may be NULL) gets the character. */
const char *tg_text_find_control(const char *text, gssize length, const char *allowed,
                                 gunichar *c);

/* Whether @text is valid UTF-8 without control characters: what may stand
 * in a log line or a message as it is. */
gboolean tg_text_is_printable(const char *text);

/* Makes @error's message printable in place (tg_text_printable(), no
 * length limit): for messages that carry a peer's text (an SSH server's
 * banner, disconnect or error) before they reach D-Bus or a terminal. */
void tg_text_error_printable(GError *error);

/* A decimal number 0..max: digits only, no sign, no blanks. */
gboolean tg_text_parse_decimal(const char *text, guint64 max, guint64 *value);

/* A decimal port 0..65535: digits only, no sign, no blanks. */
gboolean tg_text_parse_port(const char *text, guint16 *port);
