/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The text helpers (src/common/text.c): what a control character is and
 * how outside text is shown. */
#include "text.h"

static void
test_find_control(void)
{
  const char *text = "ab\tc";
  gunichar c = 0;

  g_assert_null(tg_text_find_control("plain text é", -1, NULL, NULL));
  g_assert_true(tg_text_find_control(text, -1, NULL, &c) == text + 2);
  g_assert_cmphex(c, ==, '\t');
  g_assert_null(tg_text_find_control(text, -1, "\t", NULL)); /* allowed */
  g_assert_null(tg_text_find_control(text, 2, NULL, NULL));  /* beyond @length */
  g_assert_nonnull(tg_text_find_control("x\x7f", -1, NULL, &c));
  g_assert_cmphex(c, ==, 0x7f);
  g_assert_nonnull(tg_text_find_control("x\xc2\x9b[2J", -1, NULL, &c)); /* C1 CSI */
  g_assert_cmphex(c, ==, 0x9b);
  g_assert_nonnull(tg_text_find_control("\x1b[0m", -1, "\t\r", &c));
  g_assert_cmphex(c, ==, 0x1b);
}

static void
test_is_printable(void)
{
  g_assert_true(tg_text_is_printable(""));
  g_assert_true(tg_text_is_printable("tunnel 3 up: ü"));
  g_assert_false(tg_text_is_printable("line\nforged"));
  g_assert_false(tg_text_is_printable("bad \xff byte"));
}

static void
test_printable(void)
{
  g_autofree char *a = tg_text_printable("a\nb\xff" "c\x1b", G_MAXSIZE);
  g_autofree char *b = tg_text_printable("abcdef", 3);
  g_autofree char *c = tg_text_printable("ok é", G_MAXSIZE);

  g_assert_cmpstr(a, ==, "a\\u000ab\\xffc\\u001b");
  g_assert_cmpstr(b, ==, "abc...");
  g_assert_cmpstr(c, ==, "ok é");
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/text/find-control", test_find_control);
  g_test_add_func("/text/is-printable", test_is_printable);
  g_test_add_func("/text/printable", test_printable);
  return g_test_run();
}
