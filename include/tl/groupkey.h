/*
 * groupkey.h - the node group's secret key (sealed mode, DESIGN §4).
 *
 * Every node of a group holds the same 32 random bytes; the orchestrator never
 * does. Nothing uses the key directly: from it come
 *   - its identifier (what HELLO carries, so a node of another group can be
 *     refused): HMAC-SHA256(key, "tl group key id v1"), first 16 bytes. It
 *     reveals nothing about the key beyond "same or different";
 *   - three derived keys, HKDF-SHA256 (RFC 5869) with salt "tl seal v1" and
 *     the label as info: "mask" (masked aggregation, mask.h), "mac" (parameter
 *     MACs, seal.h) and "transfer" (encrypting the node side for a rejoining
 *     node, seal.h), 32 bytes each.
 *
 * The key file is one line: 64 hex digits (upper or lower case), optionally
 * followed by a newline ("\n" or "\r\n"), nothing else. It must be a regular
 * file that neither the group nor others can read (mode 0600 or stricter);
 * anything else is refused with a message that says what to do. Text, so it
 * can be checked and copied by hand without hexdump.
 *
 *     tl_group_key gk;
 *     if (tl_group_key_generate(&gk) < 0 || tl_group_key_save(path, &gk, 0) < 0) ...
 *     if (tl_group_key_load(path, &gk) < 0) fprintf(stderr, "%s\n", tl_errmsg());
 *     ... gk.id, gk.mask_key ...
 *     tl_group_key_wipe(&gk);
 */
#ifndef TL_GROUPKEY_H
#define TL_GROUPKEY_H

#include <stddef.h>
#include <stdint.h>

#define TL_GROUP_KEY_LEN 32
#define TL_GROUP_KEY_ID_LEN 16
#define TL_DERIVED_KEY_LEN 32

/* The key and everything derived from it. Plain data: copy freely, wipe when
 * done (tl_group_key_wipe). */
typedef struct tl_group_key {
    uint8_t key[TL_GROUP_KEY_LEN];
    uint8_t id[TL_GROUP_KEY_ID_LEN];          /* shown to the orchestrator */
    uint8_t mask_key[TL_DERIVED_KEY_LEN];     /* HKDF label "mask" */
    uint8_t mac_key[TL_DERIVED_KEY_LEN];      /* HKDF label "mac" */
    uint8_t transfer_key[TL_DERIVED_KEY_LEN]; /* HKDF label "transfer" */
} tl_group_key;

/* A new random key (OpenSSL RAND_bytes) with its id and derived keys.
 * TL_EIO if the random generator fails. */
int tl_group_key_generate(tl_group_key *gk);

/* Fills gk from 32 given key bytes (derives the id and the keys). */
int tl_group_key_from_bytes(tl_group_key *gk, const uint8_t key[TL_GROUP_KEY_LEN]);

/* Reads a key file (format above). TL_EIO if it cannot be opened or is not a
 * regular file; TL_EINVAL if the group or others may read it (the message
 * says `chmod 600`); TL_EFORMAT if it is not exactly one line of 64 hex
 * digits (the message says what was found, never the contents). */
int tl_group_key_load(const char *path, tl_group_key *gk);

/* Writes the key file: created mode 0600 whatever the umask, written to a
 * temporary name, fsync'ed, then put in place atomically. An existing path
 * is TL_EIO unless force (then it is replaced). */
int tl_group_key_save(const char *path, const tl_group_key *gk, int force);

/* HKDF-SHA256(ikm = key, salt = "tl seal v1", info = label) -> out[len].
 * len 1..255*32. The building block of the derived keys above. */
int tl_group_key_derive(const uint8_t key[TL_GROUP_KEY_LEN], const char *label, uint8_t *out,
                        size_t len);

/* The id as 32 lowercase hex digits and a NUL, for messages. */
void tl_group_key_id_hex(const uint8_t id[TL_GROUP_KEY_ID_LEN],
                         char hex[2 * TL_GROUP_KEY_ID_LEN + 1]);

/* Overwrites gk with zeros in a way the compiler does not remove. NULL-safe. */
void tl_group_key_wipe(tl_group_key *gk);

#endif
