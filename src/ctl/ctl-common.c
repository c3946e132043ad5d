/* SPDX-License-Identifier: GPL-2.0-or-later */
/* What every verb uses: error messages and option parsing. */
#include <stdarg.h>
#include <stdio.h>

#include "ctl.h"

void
ctl_error(const char *format, ...)
{
  va_list args;

  /* stdio, not g_printerr(): file names are shown byte for byte, whatever
   * the locale's character set */
  fputs("tunnelgatectl: ", stderr);
  va_start(args, format);
  vfprintf(stderr, format, args);
  va_end(args);
  fputc('\n', stderr);
}

gboolean
ctl_parse_options(const char *verb, const char *parameters, const char *description,
                  const GOptionEntry *entries, int *argc, char ***argv)
{
  g_autoptr(GOptionContext) context = g_option_context_new(parameters);
  g_autoptr(GError) error = NULL;
  g_autofree char *usage_name = g_strdup_printf("tunnelgatectl %s", verb);

  /* GOption's "Usage:" line starts with the program name */
  g_set_prgname(usage_name);
  g_option_context_add_main_entries(context, entries, NULL);
  g_option_context_set_description(context, description);
  if (!g_option_context_parse(context, argc, argv, &error)) {
    ctl_error("%s", error->message);
    ctl_error("try 'tunnelgatectl %s --help'", verb);
    return FALSE;
  }
  return TRUE;
}
