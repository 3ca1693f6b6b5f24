/* kits.c - TLS kits for the tests (kits.h). */
#define _GNU_SOURCE
#include "kits.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <openssl/pem.h>

#include "harness.h"
#include "tl/provision.h"

char kits_root[PATH_MAX], kit_a[PATH_MAX + 8], kit_b[PATH_MAX + 8];

int kits_setup(void **state) {
    (void)state;
    tl_provision_opts o;
    const char *hosts[] = {"orch.example.org", "10.1.2.3"};
    snprintf(kits_root, sizeof kits_root, "/tmp/tl_test_kits.XXXXXX");
    if (!mkdtemp(kits_root)) return -1;
    snprintf(kit_a, sizeof kit_a, "%s/a", kits_root);
    snprintf(kit_b, sizeof kit_b, "%s/b", kits_root);
    tl_provision_opts_init(&o);
    o.nodes = 3;
    o.hosts = hosts;
    o.nhosts = 2;
    if (tl_provision(kit_a, &o) < 0) return -1;
    o.nodes = 1;
    o.nhosts = 0;
    if (tl_provision(kit_b, &o) < 0) return -1;
    /* node 9 of run A: a certificate that expired yesterday */
    o.not_before_s = -2 * 86400;
    o.not_after_s = -86400;
    if (tl_provision_add_node(kit_a, 9, &o) < 0) return -1;
    return 0;
}

int kits_teardown(void **state) {
    (void)state;
    rm_tree(kits_root);
    return 0;
}

int file_mode(const char *path) {
    struct stat st;
    if (stat(path, &st) < 0) return -1;
    return (int)(st.st_mode & 07777);
}

X509 *load_cert(const char *path) {
    FILE *f = fopen(path, "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f) fclose(f);
    return x;
}

EVP_PKEY *load_key(const char *path) {
    FILE *f = fopen(path, "r");
    EVP_PKEY *k = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f) fclose(f);
    return k;
}
