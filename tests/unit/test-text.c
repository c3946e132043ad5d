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
  g_autofree char *a = tg_text_printable("a\nb\xff"
                                         "c\x1b",
                                         G_MAXSIZE);
  g_autofree char *b = tg_text_printable("abcdef", 3);
  g_autofree char *c = tg_text_printable("ok é", G_MAXSIZE);

  g_assert_cmpstr(a, ==, "a\\u000ab\\xffc\\u001b");
  g_assert_cmpstr(b, ==, "abc...");
  g_assert_cmpstr(c, ==, "ok é");
}

static void
test_parse_decimal(void)
{
  static const struct {
    const char *text;
    guint64 max;
    gboolean ok;
    guint64 value;
  } cases[] = {
    { "0", 0, TRUE, 0 },
    { "1", 0, FALSE, 0 },
    { "65535", G_MAXUINT16, TRUE, G_MAXUINT16 },
    { "065535", G_MAXUINT16, TRUE, G_MAXUINT16 },
    { "65536", G_MAXUINT16, FALSE, 0 },
    { "18446744073709551615", G_MAXUINT64, TRUE, G_MAXUINT64 },
    /* past the largest maxima: no wrap-around */
    { "18446744073709551616", G_MAXUINT64, FALSE, 0 },
    { "18446744073709551625", G_MAXUINT64, FALSE, 0 },
    { "184467440737095516150", G_MAXUINT64, FALSE, 0 },
    { "9223372036854775807", G_MAXINT64, TRUE, G_MAXINT64 },
    { "9223372036854775808", G_MAXINT64, FALSE, 0 },
    { "92233720368547758070", G_MAXINT64, FALSE, 0 },
    { "", 10, FALSE, 0 },
    { "+1", 10, FALSE, 0 },
    { "-1", 10, FALSE, 0 },
    { " 1", 10, FALSE, 0 },
    { "1 ", 10, FALSE, 0 },
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    guint64 value = 7;

    g_test_message("%s", cases[i].text);
    g_assert_cmpint(tg_text_parse_decimal(cases[i].text, cases[i].max, &value), ==,
                    cases[i].ok);
    if (cases[i].ok)
      g_assert_cmpuint(value, ==, cases[i].value);
  }
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/text/find-control", test_find_control);
  g_test_add_func("/text/is-printable", test_is_printable);
  g_test_add_func("/text/printable", test_printable);
  g_test_add_func("/text/parse-decimal", test_parse_decimal);
  return g_test_run();
}
