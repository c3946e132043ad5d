/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "text.h"

#include <string.h>

char *
tg_text_printable(const char *text, gsize max_bytes)
{
  GString *out = g_string_new(NULL);
  const char *p = text;

  while (*p != '\0' && (gsize)(p - text) < max_bytes) {
    gunichar c = g_utf8_get_char_validated(p, -1);

    if (c == (gunichar)-1 || c == (gunichar)-2) {
      g_string_append_printf(out, "\\x%02x", (guchar)*p++);
      continue;
    }
    if (g_unichar_iscntrl(c))
      g_string_append_printf(out, "\\u%04x", c);
    else
      g_string_append_len(out, p, g_utf8_next_char(p) - p);
    p = g_utf8_next_char(p);
  }
  if (*p != '\0')
    g_string_append(out, "...");
  return g_string_free(out, FALSE);
}

const char *
tg_text_find_control(const char *text, gssize length, const char *allowed, gunichar *c)
{
  const char *end = length < 0 ? NULL : text + length;

  for (const char *p = text; end == NULL ? *p != '\0' : p < end;
       p = g_utf8_next_char(p)) {
    gunichar u = g_utf8_get_char(p);

    if (!g_unichar_iscntrl(u) ||
        (u < 0x80 && allowed != NULL && u != 0 && strchr(allowed, (int)u) != NULL))
      continue;
    if (c != NULL)
      *c = u;
    return p;
  }
  return NULL;
}

gboolean
tg_text_is_printable(const char *text)
{
  return g_utf8_validate(text, -1, NULL) &&
         tg_text_find_control(text, -1, NULL, NULL) == NULL;
}

void
tg_text_error_printable(GError *error)
{
  if (error == NULL || tg_text_is_printable(error->message))
    return;
  {
    char *printable = tg_text_printable(error->message, G_MAXSIZE);

    g_free(error->message);
    error->message = printable;
  }
}

gboolean
tg_text_parse_decimal(const char *text, guint64 max, guint64 *value)
{
  *value = 0;
  if (*text == '\0')
    return FALSE;
  for (const char *p = text; *p != '\0'; p++) {
    guint64 digit = (guint64)(*p - '0');

    if (!g_ascii_isdigit(*p) || digit > max || *value > (max - digit) / 10)
      return FALSE;
    *value = *value * 10 + digit;
  }
  return TRUE;
}

gboolean
tg_text_parse_port(const char *text, guint16 *port)
{
  guint64 value;

  if (!tg_text_parse_decimal(text, G_MAXUINT16, &value))
    return FALSE;
  *port = (guint16)value;
  return TRUE;
}
