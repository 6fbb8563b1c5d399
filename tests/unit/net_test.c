/*
 * net_test.c - IP addresses and CIDR networks (common/net.h): parsing,
 * membership, socket addresses and comma-separated lists.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "common/net.h"

static hsm_net net(const char *s)
{
	hsm_net n;
	assert_true(hsm_net_parse(s, true, &n));
	return n;
}

static hsm_net addr(const char *s)
{
	hsm_net n;
	assert_true(hsm_net_parse(s, false, &n));
	return n;
}

static void test_parse(void **state)
{
	(void)state;
	hsm_net n = net("10.1.0.0/16");
	assert_false(n.v6);
	assert_int_equal(n.prefix, 16);
	n = net("2001:db8::/32");
	assert_true(n.v6);
	assert_int_equal(n.prefix, 32);
	n = addr("::ffff:192.0.2.1"); /* a dual-stack socket's IPv4 client */
	assert_false(n.v6);
	assert_int_equal(n.prefix, 32);
	assert_memory_equal(n.addr, "\xc0\x00\x02\x01", 4);
	n = net("0.0.0.0/0");
	assert_int_equal(n.prefix, 0);
	const char *bad[] = {"", "/8", "10.0.0.0/", "10.0.0.0/33", "::/129", "10.0.0.0/8x",
	                     "10.0.0.0/0008", "10.0.0", "host", "10.0.0.0 /8", " 10.0.0.0"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(hsm_net_parse(bad[i], true, &n));
	assert_false(hsm_net_parse("10.0.0.0/8", false, &n)); /* an address only */
}

static void test_contains(void **state)
{
	(void)state;
	hsm_net a = addr("10.1.2.3"), b = addr("10.2.0.1"), c = addr("2001:db8::1");
	assert_true(hsm_net_contains(&(hsm_net){0}, &(hsm_net){0}));
	hsm_net n16 = net("10.1.0.0/16"), n15 = net("10.0.0.0/15"), v6 = net("2001:db8::/32");
	hsm_net all4 = net("0.0.0.0/0"), n12 = net("10.0.0.0/12");
	assert_true(hsm_net_contains(&n16, &a));
	assert_false(hsm_net_contains(&n16, &b));
	assert_true(hsm_net_contains(&n15, &a));
	assert_false(hsm_net_contains(&n15, &b));
	assert_true(hsm_net_contains(&all4, &b));
	assert_false(hsm_net_contains(&all4, &c)); /* never across families */
	assert_true(hsm_net_contains(&v6, &c));
	assert_false(hsm_net_contains(&v6, &a));
	assert_true(hsm_net_contains(&n12, &n16)); /* a network inside a larger one */
	assert_false(hsm_net_contains(&n16, &n12));
}

static void test_sockaddr(void **state)
{
	(void)state;
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	in->sin_family = AF_INET;
	assert_int_equal(inet_pton(AF_INET, "127.0.0.9", &in->sin_addr), 1);
	hsm_net n, lo = net("127.0.0.0/8");
	assert_true(hsm_net_from_sockaddr(&ss, &n));
	assert_true(hsm_net_contains(&lo, &n));
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	in6->sin6_family = AF_INET6;
	assert_int_equal(inet_pton(AF_INET6, "::ffff:127.0.0.9", &in6->sin6_addr), 1);
	assert_true(hsm_net_from_sockaddr(&ss, &n));
	assert_true(hsm_net_contains(&lo, &n)); /* IPv4-mapped reads as IPv4 */
	assert_int_equal(inet_pton(AF_INET6, "::1", &in6->sin6_addr), 1);
	assert_true(hsm_net_from_sockaddr(&ss, &n));
	assert_true(n.v6);
	assert_false(hsm_net_contains(&lo, &n));
	ss.ss_family = AF_UNIX;
	assert_false(hsm_net_from_sockaddr(&ss, &n));
}

static void test_lists(void **state)
{
	(void)state;
	hsm_net nets[3];
	size_t n = 99;
	assert_true(hsm_ok(hsm_net_list_parse("", nets, 3, &n)));
	assert_int_equal(n, 0);
	assert_true(hsm_ok(hsm_net_list_parse("  ", nets, 3, &n)));
	assert_int_equal(n, 0);
	assert_true(hsm_ok(hsm_net_list_parse(" 10.0.0.0/8 ,::1,\t192.0.2.7 ", nets, 3, &n)));
	assert_int_equal(n, 3);
	assert_int_equal(nets[0].prefix, 8);
	assert_true(nets[1].v6);
	assert_int_equal(nets[2].prefix, 32);
	const char *bad[] = {",", "10.0.0.0/8,", ",10.0.0.0/8", "10.0.0.0/8,,::1", "10.0.0.0/8 ::1",
	                     "10.0.0.0/8;::1", "a,b", "1.1.1.1,2.2.2.2,3.3.3.3,4.4.4.4"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		n = 99;
		assert_true(hsm_failed(hsm_net_list_parse(bad[i], nets, 3, &n)));
		assert_int_equal(n, 99);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse),
	    cmocka_unit_test(test_contains),
	    cmocka_unit_test(test_sockaddr),
	    cmocka_unit_test(test_lists),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
