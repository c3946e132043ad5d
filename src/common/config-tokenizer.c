/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config-tokenizer.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "text.h"
#include "tg-error.h"

void
tg_config_set_error(GError **error, const char *file, guint line, const char *format, ...)
{
  g_autofree char *message = NULL;
  va_list args;

  va_start(args, format);
  message = g_strdup_vprintf(format, args);
  va_end(args);
  g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT, "%s:%u: %s", file, line,
              message);
}

/* ---- Reading ----------------------------------------------------------- */

/* Reads at most one byte more than allowed, so an over-long file is noticed
 * without reading all of it. */
static gboolean
read_limited(int fd, const char *path, GBytes **contents, GError **error)
{
  gsize limit = TG_CONFIG_MAX_FILE_SIZE + 1;
  g_autofree char *buffer = g_malloc(limit);
  gsize length = 0;

  while (length < limit) {
    ssize_t n = read(fd, buffer + length, limit - length);

    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT, "%s: cannot read: %s", path,
                  g_strerror(errno));
      return FALSE;
    }
    if (n == 0)
      break;
    length += (gsize)n;
  }
  if (length > TG_CONFIG_MAX_FILE_SIZE) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT, "%s: larger than %d bytes",
                path, TG_CONFIG_MAX_FILE_SIZE);
    return FALSE;
  }
  *contents =
      g_bytes_new_take(g_realloc(g_steal_pointer(&buffer), MAX(length, 1)), length);
  return TRUE;
}

gboolean
tg_config_read_file(const char *path, gboolean missing_ok, GBytes **contents,
                    GError **error)
{
  struct stat info;
  gboolean ok;
  /* O_NONBLOCK: opening a FIFO someone left in the directory must not hang
   * the daemon; it is refused below as not a regular file. */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

  *contents = NULL;
  if (fd < 0) {
    if (errno == ENOENT && missing_ok)
      return TRUE;
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT, "%s: cannot open: %s", path,
                g_strerror(errno));
    return FALSE;
  }
  if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT, "%s: not a regular file",
                path);
    close(fd);
    return FALSE;
  }
  ok = read_limited(fd, path, contents, error);
  close(fd);
  return ok;
}

/* ---- Lines ------------------------------------------------------------- */

static gboolean
is_blank(char c)
{
  return c == ' ' || c == '\t' || c == '\r';
}

/* Encoding and control characters, checked before splitting so words can
 * be quoted in later messages as they are. */
static gboolean
check_line_text(const char *file, guint number, const char *text, gsize length,
                GError **error)
{
  const char *end = NULL;
  gunichar c;

  if (length > TG_CONFIG_MAX_LINE_LENGTH) {
    tg_config_set_error(error, file, number, "line longer than %d bytes",
                        TG_CONFIG_MAX_LINE_LENGTH);
    return FALSE;
  }
  if (!g_utf8_validate(text, (gssize)length, &end)) {
    tg_config_set_error(error, file, number, "invalid UTF-8 at byte %" G_GSIZE_FORMAT,
                        (gsize)(end - text));
    return FALSE;
  }
  if (tg_text_find_control(text, (gssize)length, "\t\r", &c) != NULL) {
    tg_config_set_error(error, file, number, "control character U+%04X", c);
    return FALSE;
  }
  return TRUE;
}

/* Reads one word at *cursor: blanks end it unless quoted; a backslash
 * escapes '"', '\' and (outside quotes) a blank, as sshd's argv_split. The
 * first word also ends at '=' ("Keyword=value"). */
static gboolean
read_word(const char *file, guint number, const char **cursor, const char *end,
          gboolean is_keyword, char **word, GError **error)
{
  GString *out = g_string_new(NULL);
  gboolean quoted = FALSE;
  const char *p = *cursor;

  while (p < end) {
    if (!quoted && (is_blank(*p) || (is_keyword && *p == '=')))
      break;
    if (*p == '"') {
      quoted = !quoted;
      p++;
    } else if (*p == '\\' && p + 1 < end &&
               (p[1] == '"' || p[1] == '\\' || (!quoted && is_blank(p[1])))) {
      g_string_append_c(out, p[1]);
      p += 2;
    } else {
      g_string_append_c(out, *p++);
    }
  }
  if (quoted) {
    g_string_free(out, TRUE);
    tg_config_set_error(error, file, number, "unterminated quote");
    return FALSE;
  }
  *word = g_string_free(out, FALSE);
  *cursor = p;
  return TRUE;
}

static const char *
skip_blanks(const char *p, const char *end)
{
  while (p < end && is_blank(*p))
    p++;
  return p;
}

/* Splits a checked line into words; no words for blank and comment lines. */
static gboolean
split_line(const char *file, guint number, const char *text, gsize length,
           GPtrArray *words, GError **error)
{
  const char *end = text + length;
  const char *p = skip_blanks(text, end);

  while (p < end && *p != '#') {
    char *word = NULL;

    if (!read_word(file, number, &p, end, words->len == 0, &word, error))
      return FALSE;
    g_ptr_array_add(words, word);
    p = skip_blanks(p, end);
    if (words->len == 1 && p < end && *p == '=')
      p = skip_blanks(p + 1, end);
  }
  return TRUE;
}

static gboolean
tokenize_line(const char *file, guint number, const char *text, gsize length,
              TgConfigLineFunc func, gpointer user_data, GError **error)
{
  g_autoptr(GPtrArray) words = g_ptr_array_new_with_free_func(g_free);
  TgConfigLine line = { .file = file, .number = number };

  if (!check_line_text(file, number, text, length, error) ||
      !split_line(file, number, text, length, words, error))
    return FALSE;
  if (words->len == 0)
    return TRUE;
  line.n_words = words->len;
  g_ptr_array_add(words, NULL);
  line.words = (char **)words->pdata;
  return func(&line, user_data, error);
}

static guint
count_lines(const char *data, gsize length)
{
  guint lines = 1;

  for (gsize i = 0; i < length; i++)
    lines += data[i] == '\n';
  return lines;
}

gboolean
tg_config_tokenize(const char *file, const char *data, gsize length,
                   TgConfigLineFunc func, gpointer user_data, GError **error)
{
  const char *nul = memchr(data, '\0', length);
  const char *p = data;
  const char *end = data + length;
  guint number = 0;

  if (length > TG_CONFIG_MAX_FILE_SIZE) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT, "%s: larger than %d bytes",
                file, TG_CONFIG_MAX_FILE_SIZE);
    return FALSE;
  }
  if (nul != NULL) {
    tg_config_set_error(error, file, count_lines(data, (gsize)(nul - data)), "NUL byte");
    return FALSE;
  }
  while (p < end) {
    const char *newline = memchr(p, '\n', (gsize)(end - p));
    const char *line_end = newline != NULL ? newline : end;

    if (!tokenize_line(file, ++number, p, (gsize)(line_end - p), func, user_data, error))
      return FALSE;
    p = newline != NULL ? newline + 1 : end;
  }
  return TRUE;
}
