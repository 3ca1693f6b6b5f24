/*
 * test_provision.c - tl provision: the kit's files and their modes, the
 * certificates' contents (CA, roles, identities, key usages, host names,
 * chain), the refusal to overwrite, adding a node, bad options, and the
 * `tl provision` command's exit codes. (The TLS connections made with these
 * kits are test_tls.c's.)
 */
#define _GNU_SOURCE
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "net/tls_int.h"
#include "tl/error.h"
#include "tl/provision.h"
#include "tl/tls.h"

#include "harness.h"
#include "kits.h"

/* ---- provisioning ------------------------------------------------------ */

static void test_provision_layout(void **state) {
    static const char *kits[] = {"orchestrator", "node-1", "node-2", "node-3"};
    assert_int_equal(file_mode(pathf("%s/ca/ca-key.pem", kit_a)), 0600);
    assert_int_equal(file_mode(pathf("%s/ca/ca.pem", kit_a)) & 0600, 0600);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(file_mode(pathf("%s/%s/key.pem", kit_a, kits[i])), 0600);
        assert_true(file_mode(pathf("%s/%s/cert.pem", kit_a, kits[i])) >= 0);
        char *ca1 = slurp(pathf("%s/%s/ca.pem", kit_a, kits[i]));
        char *ca2 = slurp(pathf("%s/ca/ca.pem", kit_a));
        assert_string_equal(ca1, ca2);
        free(ca1);
        free(ca2);
    }
    assert_int_equal(file_mode(pathf("%s/node-4", kit_a)), -1);

    /* certificate contents: CA, roles, identities, key usages, chain */
    X509 *ca = load_cert(pathf("%s/ca/ca.pem", kit_a));
    X509 *ca_b = load_cert(pathf("%s/ca/ca.pem", kit_b));
    X509 *orch = load_cert(pathf("%s/orchestrator/cert.pem", kit_a));
    X509 *n2 = load_cert(pathf("%s/node-2/cert.pem", kit_a));
    int id = -1;
    char why[160];
    assert_non_null(ca);
    assert_non_null(orch);
    assert_non_null(n2);
    assert_int_equal(X509_check_ca(ca), 1);
    assert_int_equal(X509_check_ca(n2), 0);
    assert_int_not_equal(X509_NAME_cmp(X509_get_subject_name(ca), X509_get_subject_name(ca_b)), 0);
    assert_int_equal(tl__tls_cert_role(orch, &id, why, sizeof why), TL_TLS_ORCHESTRATOR);
    assert_int_equal(tl__tls_cert_role(n2, &id, why, sizeof why), TL_TLS_NODE);
    assert_int_equal(id, 2);
    assert_int_equal(X509_check_purpose(orch, X509_PURPOSE_SSL_SERVER, 0), 1);
    assert_int_equal(X509_check_purpose(orch, X509_PURPOSE_SSL_CLIENT, 0), 0);
    assert_int_equal(X509_check_purpose(n2, X509_PURPOSE_SSL_CLIENT, 0), 1);
    assert_int_equal(X509_check_purpose(n2, X509_PURPOSE_SSL_SERVER, 0), 0);
    assert_int_equal(X509_check_host(orch, "orch.example.org", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(orch, "localhost", 0, 0, NULL), 1);
    assert_int_equal(X509_check_ip_asc(orch, "127.0.0.1", 0), 1);
    assert_int_equal(X509_check_ip_asc(orch, "::1", 0), 1);
    assert_int_equal(X509_check_ip_asc(orch, "10.1.2.3", 0), 1);
    assert_int_equal(X509_check_host(n2, "localhost", 0, 0, NULL), 0);
    assert_int_not_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(orch), X509_get0_serialNumber(n2)),
                         0);
    EVP_PKEY *pub = X509_get0_pubkey(ca);
    assert_int_equal(X509_verify(n2, pub), 1);
    assert_int_equal(X509_verify(orch, pub), 1);
    assert_string_equal(EVP_PKEY_get0_type_name(X509_get0_pubkey(n2)), "EC");
    X509_free(ca);
    X509_free(ca_b);
    X509_free(orch);
    X509_free(n2);
}

static void test_provision_refuses_overwrite(void **state) {
    tl_provision_opts o;
    const char *dir = pathf("%s/c", kits_root);
    const char *bad_hosts[] = {"a,b"};
    char saved[PATH_MAX + 64];
    mode_t old_umask = umask(0); /* keys must still be 0600, certificates 0644 */
    tl_provision_opts_init(&o);
    o.nodes = 2;

    snprintf(saved, sizeof saved, "%s", dir);
    assert_int_equal(mkdir(saved, 0700), 0); /* an existing empty directory is fine */
    assert_int_equal(tl_provision(saved, &o), 0);
    assert_int_equal(file_mode(pathf("%s/node-2/key.pem", saved)), 0600);
    assert_int_equal(file_mode(pathf("%s/ca/ca-key.pem", saved)), 0600);
    assert_int_equal(file_mode(pathf("%s/node-2/cert.pem", saved)), 0644);
    assert_int_equal(file_mode(pathf("%s/node-2", saved)), 0700);
    char *ca_before = slurp(pathf("%s/ca/ca.pem", saved));

    assert_int_equal(tl_provision(saved, &o), TL_EINVAL);
    print_message("refusal: %s\n", tl_errmsg());
    assert_non_null(strstr(tl_errmsg(), "refusing to overwrite"));
    char *ca_same = slurp(pathf("%s/ca/ca.pem", saved));
    assert_string_equal(ca_before, ca_same);

    o.force = 1;
    assert_int_equal(tl_provision(saved, &o), 0);
    char *ca_after = slurp(pathf("%s/ca/ca.pem", saved));
    assert_string_not_equal(ca_before, ca_after);
    assert_int_equal(file_mode(pathf("%s/node-1/key.pem", saved)), 0600);

    /* adding a node: refused over an existing kit unless forced */
    o.force = 0;
    assert_int_equal(tl_provision_add_node(saved, 2, &o), TL_EINVAL);
    assert_int_equal(tl_provision_add_node(saved, 5, &o), 0);
    assert_int_equal(file_mode(pathf("%s/node-5/key.pem", saved)), 0600);
    o.force = 1;
    assert_int_equal(tl_provision_add_node(saved, 2, &o), 0);
    assert_int_equal(tl_provision_add_node(pathf("%s/nope", kits_root), 1, &o), TL_EIO);

    /* bad options */
    o.force = 0;
    o.hosts = bad_hosts;
    o.nhosts = 1;
    assert_int_equal(tl_provision(pathf("%s/d", kits_root), &o), TL_EINVAL);
    o.nhosts = 0;
    o.nodes = 0;
    assert_int_equal(tl_provision(pathf("%s/d", kits_root), &o), TL_EINVAL);
    assert_int_equal(tl_provision_check_host("node-1.example.org"), 0);
    assert_int_equal(tl_provision_check_host("fe80::1"), 0);
    assert_int_equal(tl_provision_check_host("-bad.example"), TL_EINVAL);
    assert_int_equal(tl_provision_check_host(""), TL_EINVAL);
    umask(old_umask);
    free(ca_before);
    free(ca_same);
    free(ca_after);
}

static void test_cli(void **state) {
#ifdef TL_BIN
    const char *dir = pathf("%s/cli", kits_root);
    char cmd[PATH_MAX * 2];
    snprintf(cmd, sizeof cmd, "%s provision --nodes 2 --out %s --host 192.0.2.7 >/dev/null", TL_BIN,
             dir);
    assert_int_equal(WEXITSTATUS(system(cmd)), 0);
    assert_int_equal(file_mode(pathf("%s/node-2/key.pem", dir)), 0600);
    snprintf(cmd, sizeof cmd, "%s provision --nodes 2 --out %s 2>/dev/null", TL_BIN, dir);
    assert_int_equal(WEXITSTATUS(system(cmd)), 1);
    snprintf(cmd, sizeof cmd, "%s provision --nodes 2 --out %s --force >/dev/null", TL_BIN, dir);
    assert_int_equal(WEXITSTATUS(system(cmd)), 0);
    snprintf(cmd, sizeof cmd, "%s provision --add-node 3 --out %s >/dev/null", TL_BIN, dir);
    assert_int_equal(WEXITSTATUS(system(cmd)), 0);
    snprintf(cmd, sizeof cmd, "%s provision --nodes 0 --out %s/x 2>/dev/null", TL_BIN, kits_root);
    assert_int_equal(WEXITSTATUS(system(cmd)), 2);
    snprintf(cmd, sizeof cmd, "%s provision --nodes 2 --out %s/x --host 'a b' 2>/dev/null", TL_BIN,
             kits_root);
    assert_int_equal(WEXITSTATUS(system(cmd)), 2);
    snprintf(cmd, sizeof cmd, "%s provision --frobnicate 2>/dev/null", TL_BIN);
    assert_int_equal(WEXITSTATUS(system(cmd)), 2);
    snprintf(cmd, sizeof cmd, "%s provision --help | grep -q -- '--tls-dir DIR/node-K'", TL_BIN);
    assert_int_equal(WEXITSTATUS(system(cmd)), 0);
#else
    skip();
#endif
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_provision_layout),
        cmocka_unit_test(test_provision_refuses_overwrite),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, kits_setup, kits_teardown);
}
