/*
 * kits.h - TLS kits for the tests of provisioning and of TLS connections
 * (tests/kits.c, in the test harness library; include after <cmocka.h>).
 *
 *   cmocka_run_group_tests(tests, kits_setup, kits_teardown);
 *   X509 *ca = load_cert(pathf("%s/ca/ca.pem", kit_a));  // in a test
 *
 * Run A (kit_a): 3 nodes, hosts orch.example.org and 10.1.2.3, and node 9
 * whose certificate expired yesterday. Run B (kit_b): 1 node, another CA.
 */
#ifndef TL_TESTS_KITS_H
#define TL_TESTS_KITS_H

#include <limits.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

/* The scratch tree (a fresh /tmp/tl_test_kits.XXXXXX) and the two runs' kit
 * directories in it, set by kits_setup. */
extern char kits_root[PATH_MAX], kit_a[PATH_MAX + 8], kit_b[PATH_MAX + 8];

/* Group setup: makes kits_root and provisions run A into kit_a and run B into
 * kit_b; 0 or -1. */
int kits_setup(void **state);
/* Group teardown: removes kits_root (unless TL_KEEP_TMP is set); 0. */
int kits_teardown(void **state);
/* The permission bits of path, -1 if it does not exist. */
int file_mode(const char *path);
/* The PEM certificate at path (X509_free it), NULL if unreadable. */
X509 *load_cert(const char *path);
/* The PEM private key at path (EVP_PKEY_free it), NULL if unreadable. */
EVP_PKEY *load_key(const char *path);

#endif
