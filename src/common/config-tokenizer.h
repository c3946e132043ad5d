/* SPDX-License-Identifier: GPL-2.0-or-later */
/* sshd_config-style files: reading them with limits and splitting them into
 * lines of words. Shared by the organisation policy (policy-parser.c) and
 * tunnel profiles (profile.c), so both accept exactly the same syntax:
 *
 *   Keyword argument...     keyword case is the caller's business
 *   Keyword=argument        '=' (with optional blanks) may follow the keyword
 *   # comment               at the start of a line or after a blank
 *   "quoted words"          '\"' and '\\' escape inside quotes
 *
 * Blanks are spaces, tabs and CRs. Lines are at most TG_CONFIG_MAX_LINE_LENGTH
 * bytes (newline excluded), files at most TG_CONFIG_MAX_FILE_SIZE; NUL bytes,
 * other control characters and invalid UTF-8 are errors. Every error is
 * TG_ERROR_INVALID_ARGUMENT with a message starting "file:line: ". */
#pragma once

#include <glib.h>

#include "text.h"

#define TG_CONFIG_MAX_LINE_LENGTH (16 * 1024)
#define TG_CONFIG_MAX_FILE_SIZE (16 * 1024 * 1024)

/* One non-empty, non-comment line. */
typedef struct {
  const char *file;
  guint number; /* 1-based */
  char **words; /* words[0] is the keyword; NULL-terminated */
  guint n_words;
} TgConfigLine;

/* Called for each line in order; return FALSE (setting @error) to stop. */
typedef gboolean (*TgConfigLineFunc)(const TgConfigLine *line, gpointer user_data,
                                     GError **error);

/* Reads a regular file of at most TG_CONFIG_MAX_FILE_SIZE bytes. When the
 * file does not exist and @missing_ok is TRUE, returns TRUE with *contents
 * set to NULL. */
gboolean tg_config_read_file(const char *path, gboolean missing_ok, GBytes **contents,
                             GError **error);

/* Checks @data as a whole (size, NUL bytes) and calls @func for each line.
 * @file names the source in messages. */
gboolean tg_config_tokenize(const char *file, const char *data, gsize length,
                            TgConfigLineFunc func, gpointer user_data, GError **error);

/* Sets TG_ERROR_INVALID_ARGUMENT "file:line: message". */
void tg_config_set_error(GError **error, const char *file, guint line, const char *format,
                         ...) G_GNUC_PRINTF(4, 5);
