/*
 * le.h - byte-order helpers: fixed-width integers loaded from and stored to
 * byte buffers, whatever the host's byte order and alignment.
 *
 * The wire format (frame.h, msg.h), safetensors and the evaluation tallies
 * are little-endian; IDX headers are big-endian. Every piece of code that
 * reads or writes such a field uses these, never its own shifts:
 *
 *     uint8_t b[8];
 *     tl_le_store64(b, n);              // b[0] is the least significant byte
 *     uint64_t m = tl_le_load64(b);     // m == n
 *
 * p need not be aligned; the caller guarantees the 2, 4 or 8 bytes exist.
 */
#ifndef TL_LE_H
#define TL_LE_H

#include <stdint.h>

/* Stores v at p[0..2) least significant byte first. */
static inline void tl_le_store16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* Stores v at p[0..4) least significant byte first. */
static inline void tl_le_store32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Stores v at p[0..8) least significant byte first. */
static inline void tl_le_store64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* The little-endian 16-bit value at p[0..2). */
static inline uint16_t tl_le_load16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

/* The little-endian 32-bit value at p[0..4). */
static inline uint32_t tl_le_load32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* The little-endian 64-bit value at p[0..8). */
static inline uint64_t tl_le_load64(const uint8_t *p) {
    return (uint64_t)tl_le_load32(p) | ((uint64_t)tl_le_load32(p + 4) << 32);
}

/* Stores v at p[0..4) most significant byte first (IDX dimensions). */
static inline void tl_be_store32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i));
}

/* The big-endian 32-bit value at p[0..4) (IDX dimensions). */
static inline uint32_t tl_be_load32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

#endif
