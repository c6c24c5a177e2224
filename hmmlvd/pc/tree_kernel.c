/* Fused CPU kernels for the two generic tree passes of hmmlvd/pc/tree_pass.py (upward and downward).
 *
 * Plain C99 with OpenMP, no Python or torch headers. The file is compiled twice, once per precision:
 *     -DREAL=float  -DSUFFIX=f32     ->  hmmlvd_upward_f32, hmmlvd_downward_f32
 *     -DREAL=double -DSUFFIX=f64     ->  hmmlvd_upward_f64, hmmlvd_downward_f64
 * and the two objects are linked into one shared library (hmmlvd/pc/tree_kernel.py does this).
 *
 * G trees share one structure of D nodes, hidden size H, M columns (examples) per tree. The values are a strided
 * [G, D, M, H] array (the last stride must be 1); every other array is contiguous:
 *     log_scales [G, M]       (Σ_j log s_j over the scales s_j of every node: a non-root node's message's largest
 *                              entry, and the root's sum; each task multiplies them into one mantissa and exponent
 *                              per column while it runs, so only the one log per column is taken at the end)
 *     transitions [G, D-1, H_parent, H_child], root_weights [G, H], root_sums [G, M],
 *     root_scales [G, M] (the root flows divided by the root sums),
 *     transition_counts [G, D-1, H, H] and root_counts [G, H] (accumulated into; either may be NULL).
 * The math is that of the torch passes (see tree_pass.py), except that no messages are stored: after the upward
 * pass a node's scaled values x give the message it sent as w x, which the downward pass recomputes. Recomputing
 * costs a third more arithmetic and saves writing and reading back as many numbers as the values hold, which on a
 * CPU whose passes wait on memory is the larger cost.
 *
 * Leaves may be given as rows of a table (tree_pass.Leaves): leaf_table [T, D, K, H], leaf_index [S, D, M] (int64,
 * -1 for a missing value, whose leaf is 1) and leaf_trees [G] (the table entry of every tree; NULL: tree g reads
 * entry g); tree g reads the index of stack g / (G / S). The upward pass then reads each task's leaves itself
 * (clamped at the smallest normal number): a node's first child writes the node's row as its leaf times the message
 * (no separate pass writes the leaves first; only childless nodes' leaves are copied in), and the downward pass adds
 * every observed leaf's flow into leaf_counts [T, D, K, H] (only with leaf_trees NULL, so that a tree owns its table
 * entry) as it writes the flow.
 *
 * Work is cut into tasks of (a block of trees, a block of columns). A block of trees spans at least one cache line
 * of H-rows (so small H does not waste the lines of a node-major layout) and a block of columns keeps the D rows
 * of every column of the block in L2 while the node loop runs over them. With enough blocks of trees, each thread
 * owns whole blocks of trees (and their counts); otherwise columns are split too and every thread accumulates its
 * counts privately, summed at the end. Results are reproducible to the bit: a task that owns its counts (or writes
 * none) gives the same numbers whichever thread runs it, so those tasks are dealt out as threads come free (a busy
 * core does not hold the other back); tasks with private counts are dealt out statically, so that every thread's
 * counts, and their total, are summed in the same order on every call.
 *
 * The inner loops run over H with contiguous rows (axpy form); they are compiled for H = 4, 8, 16, 32 and 64
 * as constants (fully unrolled and vectorised), and for any other H generically. Built by GCC in float32 with
 * contiguous rows, H = 4 packs four columns per 16-number vector and H = 16 holds a row in one (see below).
 */
#define _POSIX_C_SOURCE 200112L        /* posix_memalign */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>                    /* sysconf */
#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef REAL
#define REAL float
#define SUFFIX f32
#endif

#define CONCAT_(a, b) a##_##b
#define CONCAT(a, b) CONCAT_(a, b)
#define NAME(name) CONCAT(name, SUFFIX)
#define INLINE static inline __attribute__((always_inline))

#define LINE_BYTES 64                   /* a cache line */
#define BLOCK_BYTES_LEAST (64 * 1024)   /* the D rows of a column block's trees: a quarter of a core's L2 ... */
#define BLOCK_BYTES_MOST (512 * 1024)   /* ... within these bounds, */
#define BLOCK_BYTES_UNKNOWN (256 * 1024) /* or this where the C library does not say */
#ifndef TASKS_PER_THREAD
#define TASKS_PER_THREAD 4              /* fewer blocks of trees than this per thread: split the columns too */
#endif
#ifndef SPLIT_COLUMNS
#define SPLIT_COLUMNS 32                /* the fewest columns per block when columns are split over threads */
#endif
#ifndef TILE
#define TILE 4                          /* columns whose H x H products run side by side */
#endif

static const REAL TINY = sizeof(REAL) == sizeof(float) ? FLT_MIN : DBL_MIN;
static const double LN2 = 0.69314718055994530942;

/* The downward pass flushes subnormal numbers to zero (x86: MXCSR's FTZ and DAZ bits, set by each thread for the
 * pass and restored after). Trained circuits have posteriors far below the smallest normal number, and arithmetic
 * on subnormals runs through microcode assists: without the flush the downward pass of a sharp circuit ran 2.5x
 * slower, and EM epochs slowed down as training went on. A flushed flow is below 1.2e-38 (float) in a column whose
 * flows sum to its weight. The upward pass keeps subnormals, so every value stays positive (see tree_pass.py). */
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define FLUSH_SUBNORMALS 0x8040u
INLINE unsigned flush_subnormals(void) {
    const unsigned saved = _mm_getcsr();
    _mm_setcsr(saved | FLUSH_SUBNORMALS);
    return saved;
}
INLINE void restore_float_mode(unsigned saved) { _mm_setcsr(saved); }
#else
INLINE unsigned flush_subnormals(void) { return 0; }
INLINE void restore_float_mode(unsigned saved) { (void)saved; }
#endif

/* The shapes and pointers of one call. */
typedef struct {
    int64_t groups, nodes, columns, hidden;
    int64_t stride_group, stride_node, stride_column;     /* of the values, in elements (the hidden stride is 1) */
    REAL *values;
    REAL *log_scales;
    const REAL *transitions;
    const REAL *root_weights;
    REAL *root_sums;
    const REAL *root_scales;
    const int64_t *order, *parents, *rows;
    int64_t root;
    const REAL *leaf_table;        /* leaves as table rows (NULL: the values hold the leaves) */
    const int64_t *leaf_index, *leaf_trees;
    int64_t categories, stacks;
    int64_t block_groups, block_columns;   /* the most trees and columns of one task (the grid's blocks) */
} Pass;

/* How the (trees, columns) grid is cut into tasks. */
typedef struct {
    int64_t group_block, column_block, group_blocks, column_blocks;
    int split;                     /* columns split: counts go to per-thread accumulators */
} Grid;

/* The bytes of a column block's rows (see the defines above). A quarter of the L2: on a host with 2 MiB of L2 per
 * core, 512 KiB blocks ran EM counts 1.03-1.09x and likelihood passes 1.02-1.08x faster than 256 KiB, and 1 MiB
 * blocks no faster than 512 KiB. Asked once per process (sysconf may run cpuid, slow in a virtual machine). */
static int64_t block_bytes(void) {
    static int64_t known = 0;
    if (!known) {
        int64_t bytes = BLOCK_BYTES_UNKNOWN;
#ifdef _SC_LEVEL2_CACHE_SIZE
        const long level2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
        if (level2 > 0) bytes = level2 / 4;
#endif
        bytes = bytes < BLOCK_BYTES_LEAST ? BLOCK_BYTES_LEAST : bytes;
        known = bytes > BLOCK_BYTES_MOST ? BLOCK_BYTES_MOST : bytes;
    }
    return known;
}

static Grid make_grid(const Pass *p, int threads) {
    Grid grid;
    int64_t row_bytes = p->hidden * (int64_t)sizeof(REAL);
    int64_t block = (LINE_BYTES + row_bytes - 1) / row_bytes;
    grid.group_block = block < p->groups ? block : p->groups;
    grid.group_blocks = (p->groups + grid.group_block - 1) / grid.group_block;
    int64_t per_column = p->nodes * grid.group_block * row_bytes;
    int64_t columns = block_bytes() / per_column;
    columns = columns < 1 ? 1 : columns;
    grid.split = grid.group_blocks < (int64_t)TASKS_PER_THREAD * threads;
    if (grid.split) {                                     /* enough tasks for every thread */
        int64_t wanted = ((int64_t)TASKS_PER_THREAD * threads + grid.group_blocks - 1) / grid.group_blocks;
        int64_t even = (p->columns + wanted - 1) / wanted;
        even = even < SPLIT_COLUMNS ? SPLIT_COLUMNS : even;     /* few columns: not worth private counts */
        columns = even < columns ? even : columns;
        columns = columns < 1 ? 1 : columns;
    }
    grid.column_block = columns < p->columns ? columns : (p->columns > 0 ? p->columns : 1);
    grid.column_blocks = (p->columns + grid.column_block - 1) / grid.column_block;
    return grid;
}

/* The H-row of the values of tree g, node v, column m. */
INLINE REAL *row_at(const Pass *p, int64_t g, int64_t v, int64_t m) {
    return p->values + g * p->stride_group + v * p->stride_node + m * p->stride_column;
}

/* The pass p with the values of trees [g0, g1), columns [m0, m1) in block, contiguous [g1 - g0, D, m1 - m0, H]: a
 * caller that keeps no values (values NULL) has every task run in a block of its own, in the core's caches. The
 * values pointer is set g0 trees and m0 columns before the block (in integer arithmetic: it is only ever used at
 * offsets that land inside the block), so row_at needs no base of its own: an offset subtracted per row cost the
 * H = 4 passes, which gather and scatter a 16-byte row per column, 20 % of their time. */
static Pass in_block(const Pass *p, REAL *block, int64_t g0, int64_t m0, int64_t m1) {
    Pass q = *p;
    q.stride_column = p->hidden, q.stride_node = (m1 - m0) * p->hidden, q.stride_group = p->nodes * q.stride_node;
    const int64_t before = g0 * q.stride_group + m0 * q.stride_column;
    q.values = (REAL *)((uintptr_t)block - (uintptr_t)before * sizeof(REAL));
    return q;
}

/* numbers rounded up to whole cache lines. */
static int64_t whole_lines(int64_t numbers) {
    const int64_t per_line = LINE_BYTES / (int64_t)sizeof(REAL);
    return (numbers + per_line - 1) / per_line * per_line;
}

/* Memory for numbers REALs starting on a cache line (zeroed if asked), NULL if there is none; free() releases it. */
static REAL *allocate(int64_t numbers, int zeroed) {
    void *memory = NULL;
    if (posix_memalign(&memory, LINE_BYTES, (size_t)numbers * sizeof(REAL))) return NULL;
    if (zeroed) memset(memory, 0, (size_t)numbers * sizeof(REAL));
    return memory;
}

/* The largest block of one task (numbers). */
static int64_t block_size(const Pass *p, const Grid *grid) {
    return grid->group_block * p->nodes * grid->column_block * p->hidden;
}

/* ---------------------------------------------------------------- the scales' running product */

/* A REAL's bits, and where its exponent and mantissa lie in them (IEEE 754). */
#define IS_f32 1
#define IS_f64 0
#if CONCAT(IS, SUFFIX)
typedef uint32_t Bits;
#define MANTISSA_BITS 23
#define EXPONENT_BIAS 127
#else
typedef uint64_t Bits;
#define MANTISSA_BITS 52
#define EXPONENT_BIAS 1023
#endif
#define MANTISSA_MASK ((((Bits)1) << MANTISSA_BITS) - 1)
#define EXPONENT_MASK (~MANTISSA_MASK & ~(((Bits)1) << (8 * sizeof(Bits) - 1)))
#define ONE_BITS (((Bits)EXPONENT_BIAS) << MANTISSA_BITS)

/* Multiply the scales[0..count) (each at least TINY) into the columns' running products mantissa · 2^exponent,
 * leaving every mantissa in [1, 2): a product of any number of scales neither underflows nor overflows, and the
 * column's log is exponent · log 2 + log mantissa. A product that is not finite (an infinite or NaN scale) is kept
 * as it is, so that its log is too. */
INLINE void fold_scales(const REAL *restrict scales, REAL *restrict mantissa, int64_t *restrict exponent,
                        int64_t count) {
#pragma omp simd
    for (int64_t i = 0; i < count; ++i) {
        const REAL product = mantissa[i] * scales[i];
        Bits bits;
        memcpy(&bits, &product, sizeof bits);
        const int finite = (bits & EXPONENT_MASK) != EXPONENT_MASK;
        const Bits normed = (bits & MANTISSA_MASK) | ONE_BITS;
        REAL next;
        memcpy(&next, &normed, sizeof next);
        exponent[i] += finite ? (int64_t)(bits >> MANTISSA_BITS) - EXPONENT_BIAS : 0;
        mantissa[i] = finite ? next : product;
    }
}

/* ---------------------------------------------------------------- leaves as table rows */

/* The index of the columns of node v of tree g ([M]). */
INLINE const int64_t *leaf_columns(const Pass *p, int64_t g, int64_t v) {
    const int64_t stack = g / (p->groups / p->stacks);
    return p->leaf_index + (stack * p->nodes + v) * p->columns;
}

/* The offset, in H-rows, of the table rows of node v of tree g ([K, H]). */
INLINE int64_t leaf_entry(const Pass *p, int64_t g, int64_t v) {
    const int64_t tree = p->leaf_trees ? p->leaf_trees[g] : g;
    return (tree * p->nodes + v) * p->categories;
}

/* The leaves of one node of one tree, for a run of columns: index [columns] (NULL: none given) into the node's
 * table rows [K, H] (the upward pass reads them) or count rows [K, H] (the downward pass adds flows into them). */
typedef struct {
    const int64_t *index;
    const REAL *table;
    REAL *counts;
    const REAL *ones;              /* [H]: the leaf of a missing value */
} NodeLeaves;

/* leaf shifted by count columns. */
INLINE NodeLeaves leaves_after(NodeLeaves leaf, int64_t count) {
    if (leaf.index) leaf.index += count;
    return leaf;
}

/* The table row of column m (its user clamps it, leaf_value), or a row of ones if the value is missing. */
INLINE const REAL *leaf_row(NodeLeaves leaf, int64_t m, int64_t H) {
    const int64_t i = leaf.index[m];
    return i < 0 ? leaf.ones : leaf.table + i * H;
}

/* Add the flow row of column m into its observed value's count row (nothing if missing). */
INLINE void count_leaf(NodeLeaves leaf, int64_t m, const REAL *restrict flow, int64_t H) {
    const int64_t i = leaf.index[m];
    if (i < 0) return;
    REAL *restrict c = leaf.counts + i * H;
#pragma omp simd
    for (int64_t h = 0; h < H; ++h) c[h] += flow[h];
}

/* The leaves of node v of tree g from column m0: their table rows (table [T, D, K, H] and ones) or their count
 * rows (counts [T, D, K, H]); none (index NULL) if both are NULL. */
INLINE NodeLeaves node_leaves(const Pass *p, const REAL *table, const REAL *ones, REAL *counts, int64_t g, int64_t v,
                              int64_t m0) {
    NodeLeaves leaf = {NULL, NULL, NULL, ones};
    if (!table && !counts) return leaf;
    const int64_t entry = leaf_entry(p, g, v) * p->hidden;
    leaf.index = leaf_columns(p, g, v) + m0;
    leaf.table = table ? table + entry : NULL;
    leaf.counts = counts ? counts + entry : NULL;
    return leaf;
}

/* A leaf as the passes use it: at least TINY, so that no message is zero. */
INLINE REAL leaf_value(REAL value) { return value < TINY ? TINY : value; }

/* Ask the caches for the rows [K, H] of rows [T, D, K, H] (table rows, or count rows for writing) that node v of
 * tree g uses at columns [m0, m1), in a block of trees' first block of columns only. The reads of a task whose rows
 * are not in cache (an untied circuit's, whose every tree reads its own table once) then overlap instead of
 * waiting one node at a time: without the prefetch such passes ran 1.2-1.4x slower. Later blocks of columns find
 * most rows in L2, where the prefetch only costs time. */
INLINE void prefetch_rows(const Pass *p, const REAL *rows, int write, int64_t g, int64_t v, int64_t m0, int64_t m1) {
    if (m0 != 0) return;
    const int64_t *index = leaf_columns(p, g, v);
    const REAL *table = rows + leaf_entry(p, g, v) * p->hidden;
    for (int64_t m = m0; m < m1; ++m)
        if (index[m] >= 0) {
            if (write)
                __builtin_prefetch(table + index[m] * p->hidden, 1);
            else
                __builtin_prefetch(table + index[m] * p->hidden);
        }
}

/* Prepare the leaves of trees [g0, g1), columns [m0, m1) for the upward pass: write those of the childless nodes
 * (state 0) into the values, and prefetch the table rows of every other node, which the upward step of its first
 * child reads (see upward_columns). */
INLINE void prepare_leaves(const Pass *p, const unsigned char *state, const REAL *ones, int64_t g0, int64_t g1,
                           int64_t m0, int64_t m1, int64_t H) {
    for (int64_t g = g0; g < g1; ++g)
        for (int64_t v = 0; v < p->nodes; ++v) {
            if (state[v]) {
                prefetch_rows(p, p->leaf_table, 0, g, v, m0, m1);
                continue;
            }
            const NodeLeaves leaf = node_leaves(p, p->leaf_table, ones, NULL, g, v, m0);
            for (int64_t m = m0; m < m1; ++m) {
                REAL *restrict x = row_at(p, g, v, m);
                const REAL *restrict row = leaf_row(leaf, m - m0, H);
#pragma omp simd
                for (int64_t h = 0; h < H; ++h) x[h] = leaf_value(row[h]);
            }
        }
}

/* ---------------------------------------------------------------- H = 4, four columns per vector (GCC, float) */

/* With H = 4 and contiguous rows, four columns fill one 16-number vector: lane 4t + a is state a of column t. Every
 * step of a node then runs on whole vectors (in-group shuffles instead of scalar broadcasts and horizontal sums),
 * and the downward pass keeps the node's outer products in registers across its columns. Same math, summed in
 * another order. Built by GCC for float only (vector extensions, __builtin_shuffle); elsewhere the generic code. */
#if defined(__GNUC__) && !defined(__clang__) && CONCAT(IS, SUFFIX)
#define PACKED4 1
typedef float Vec16 __attribute__((vector_size(64)));
typedef int32_t Lanes16 __attribute__((vector_size(64)));

#define GROUPS4(f) {f(0, 0), f(0, 1), f(0, 2), f(0, 3), f(1, 0), f(1, 1), f(1, 2), f(1, 3), \
                    f(2, 0), f(2, 1), f(2, 2), f(2, 3), f(3, 0), f(3, 1), f(3, 2), f(3, 3)}
#define LANE(t, a, expr) (4 * (t) + (expr))
#define PICK0(t, a) LANE(t, a, 0)
#define PICK1(t, a) LANE(t, a, 1)
#define PICK2(t, a) LANE(t, a, 2)
#define PICK3(t, a) LANE(t, a, 3)
#define FLIP1(t, a) LANE(t, a, (a) ^ 1)
#define FLIP2(t, a) LANE(t, a, (a) ^ 2)
#define TURN1(t, a) LANE(t, a, ((a) + 1) & 3)
#define TURN2(t, a) LANE(t, a, ((a) + 2) & 3)
#define TURN3(t, a) LANE(t, a, ((a) + 3) & 3)

INLINE Vec16 load16(const float *x) { Vec16 v; memcpy(&v, x, sizeof v); return v; }
INLINE Vec16 max16(Vec16 a, Vec16 b) {
    const Lanes16 less = a < b;
    return (Vec16)(((Lanes16)a & ~less) | ((Lanes16)b & less));
}
INLINE void store16(float *x, Vec16 v) { memcpy(x, &v, sizeof v); }

/* The four 4-number rows a, b, c, d as one vector (lanes 4t + j: row t's entry j), built in registers: a vector
 * loaded from four smaller stores just made waits for them to reach the cache (no store forwarding), which made
 * the H = 4 likelihood pass 1.25x slower; built from 16 scalars it was 1.15x slower. GCC before 12 has no
 * __builtin_shufflevector and takes the stores. */
#if __GNUC__ >= 12
typedef float Vec4 __attribute__((vector_size(16)));
typedef float Vec8 __attribute__((vector_size(32)));
INLINE Vec4 load4(const float *x) { Vec4 v; memcpy(&v, x, sizeof v); return v; }
INLINE Vec16 rows4(const float *a, const float *b, const float *c, const float *d) {
    const Vec8 low = __builtin_shufflevector(load4(a), load4(b), 0, 1, 2, 3, 4, 5, 6, 7);
    const Vec8 high = __builtin_shufflevector(load4(c), load4(d), 0, 1, 2, 3, 4, 5, 6, 7);
    return __builtin_shufflevector(low, high, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}
#else
INLINE Vec16 rows4(const float *a, const float *b, const float *c, const float *d) {
    float rows[16];
    memcpy(rows, a, 4 * sizeof(float)), memcpy(rows + 4, b, 4 * sizeof(float));
    memcpy(rows + 8, c, 4 * sizeof(float)), memcpy(rows + 12, d, 4 * sizeof(float));
    return load16(rows);
}
#endif

/* v, opaque to the optimiser: with -fassociative-math it may regroup z (m s) as (z m) s, whose middle product can
 * underflow where the scaled message m s was made to avoid just that. */
INLINE Vec16 opaque16(Vec16 v) {
#ifdef __AVX512F__
    __asm__("" : "+v"(v));
#else
    __asm__("" : "+m"(v));
#endif
    return v;
}

/* The 4 x 4 matrix m as four vectors: rows[c] holds m[c][0..3] in every group of four lanes. */
INLINE void tile_rows4(const float *restrict m, Vec16 rows[4]) {
    for (int c = 0; c < 4; ++c)
        for (int lane = 0; lane < 16; ++lane) rows[c][lane] = m[c * 4 + (lane & 3)];
}

/* Lane 4t + a of the result: Σ_c v[4t + c] rows[c][a], i.e. the four row products v_t m at once. */
INLINE Vec16 products4(Vec16 v, const Vec16 rows[4]) {
    const Lanes16 pick0 = GROUPS4(PICK0), pick1 = GROUPS4(PICK1), pick2 = GROUPS4(PICK2), pick3 = GROUPS4(PICK3);
    return __builtin_shuffle(v, pick0) * rows[0] + __builtin_shuffle(v, pick1) * rows[1]
         + __builtin_shuffle(v, pick2) * rows[2] + __builtin_shuffle(v, pick3) * rows[3];
}

/* Columns [0, count) (count a multiple of 4) of one node of one tree, as upward_columns with H = 4. */
INLINE void upward_node4(float *restrict x, float *restrict z, float *restrict sums,
                         const float *restrict wt, int64_t count, NodeLeaves leaf) {
    const Lanes16 flip1 = GROUPS4(FLIP1), flip2 = GROUPS4(FLIP2);
    const Vec16 tiny = (Vec16){0} + TINY;
    Vec16 rows[4];
    tile_rows4(wt, rows);
    for (int64_t m = 0; m < count; m += 4) {
        const Vec16 v = load16(x + 4 * m);
        const Vec16 out = products4(v, rows);                   /* w x, before scaling */
        Vec16 peak = max16(out, __builtin_shuffle(out, flip1));
        peak = max16(max16(peak, __builtin_shuffle(peak, flip2)), tiny);   /* every lane: its column's largest */
        for (int t = 0; t < 4; ++t) sums[m + t] = peak[4 * t];
        const Vec16 scale = 1 / peak;
        const Vec16 message = opaque16(out * scale);
        store16(x + 4 * m, v * scale);
        Vec16 before;
        if (leaf.index) {
            before = max16(rows4(leaf_row(leaf, m, 4), leaf_row(leaf, m + 1, 4), leaf_row(leaf, m + 2, 4),
                                 leaf_row(leaf, m + 3, 4)), tiny);
        } else {
            before = load16(z + 4 * m);
        }
        store16(z + 4 * m, before * message);
    }
}

/* Columns [0, count) (count a multiple of 4) of one node of one tree, as downward_columns with H = 4; with outer
 * (else NULL), outer[a][c] += Σ_m ratio_m[a] x_m[c]. */
INLINE void downward_node4(float *restrict x, const float *restrict flow, const float *restrict w,
                           const float *restrict wt, float *restrict outer, int64_t count, NodeLeaves leaf) {
    const Lanes16 turn1 = GROUPS4(TURN1), turn2 = GROUPS4(TURN2), turn3 = GROUPS4(TURN3);
    Vec16 rows[4], columns[4];
    tile_rows4(w, rows);
    tile_rows4(wt, columns);
    Vec16 same = {0}, by1 = {0}, by2 = {0}, by3 = {0};        /* lane 4t + c: Σ ratio[(c + s) & 3] x[c] */
    for (int64_t m = 0; m < count; m += 4) {
        const Vec16 v = load16(x + 4 * m);
        const Vec16 ratio = load16(flow + 4 * m) / products4(v, columns);       /* over the message sent, w x */
        if (outer) {
            same += ratio * v;
            by1 += __builtin_shuffle(ratio, turn1) * v;
            by2 += __builtin_shuffle(ratio, turn2) * v;
            by3 += __builtin_shuffle(ratio, turn3) * v;
        }
        store16(x + 4 * m, v * products4(ratio, rows));
        if (leaf.index)
            for (int t = 0; t < 4; ++t) count_leaf(leaf, m + t, x + 4 * (m + t), 4);
    }
    if (outer) {
        const Vec16 shifted[4] = {same, by1, by2, by3};
        for (int s = 0; s < 4; ++s)
            for (int c = 0; c < 4; ++c)
                outer[((c + s) & 3) * 4 + c] += shifted[s][c] + shifted[s][4 + c] + shifted[s][8 + c]
                                                + shifted[s][12 + c];
    }
}

/* ---------------------------------------------------------------- H = 16, one column per vector (GCC, float) */

/* With H = 16 a row is one 16-number vector. The upward pass keeps the 16 rows of w transposed in registers and runs
 * eight columns side by side (eight independent accumulators), and finds the eight columns' largest entries with
 * one shuffle tree; the downward pass keeps the node's 16 x 16 outer products in registers across its columns. */
#define TILE16 8

/* Lane-wise max of the two halves picked by the masks from the 32 lanes of a and b. */
INLINE Vec16 max_halves(Vec16 a, Vec16 b, Lanes16 first, Lanes16 second) {
    return max16(__builtin_shuffle(a, b, first), __builtin_shuffle(a, b, second));
}

/* The largest entry of each of eight vectors: lane 2t of the result is that of out[t]. */
INLINE Vec16 maxima8(const Vec16 out[8]) {
    const Lanes16 half0 = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23};
    const Lanes16 half1 = half0 + 8;
    const Lanes16 quarter0 = {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27};
    const Lanes16 quarter1 = quarter0 + 4;
    const Lanes16 eighth0 = {0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29};
    const Lanes16 eighth1 = eighth0 + 2;
    const Lanes16 swap = {1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14};
    Vec16 pairs[4], quads[2];
    for (int t = 0; t < 4; ++t) pairs[t] = max_halves(out[2 * t], out[2 * t + 1], half0, half1);    /* 8 lanes each */
    for (int t = 0; t < 2; ++t) quads[t] = max_halves(pairs[2 * t], pairs[2 * t + 1], quarter0, quarter1);
    const Vec16 octet = max_halves(quads[0], quads[1], eighth0, eighth1);                    /* 2 lanes each */
    return max16(octet, __builtin_shuffle(octet, swap));
}

/* Columns [0, count) (count a multiple of TILE16) of one node of one tree, as upward_columns with H = 16. */
INLINE void upward_node16(float *restrict x, float *restrict z, float *restrict sums,
                          const float *restrict wt, int64_t count, NodeLeaves leaf) {
    Vec16 rows[16];
    for (int c = 0; c < 16; ++c) rows[c] = load16(wt + 16 * c);
    const Vec16 tiny = (Vec16){0} + TINY;
    for (int64_t m = 0; m < count; m += TILE16) {
        const float *restrict v = x + 16 * m;
        Vec16 out[TILE16];
        for (int t = 0; t < TILE16; ++t) out[t] = v[16 * t] * rows[0];
        for (int c = 1; c < 16; ++c)
            for (int t = 0; t < TILE16; ++t) out[t] += v[16 * t + c] * rows[c];
        const Vec16 peak = max16(maxima8(out), tiny);
        float scales[16];
        store16(scales, 1 / peak);
        for (int t = 0; t < TILE16; ++t) {
            const int64_t at = 16 * (m + t);
            sums[m + t] = peak[2 * t];
            const Vec16 message = opaque16(out[t] * scales[2 * t]);
            store16(x + at, load16(x + at) * scales[2 * t]);
            const Vec16 before = leaf.index ? max16(load16(leaf_row(leaf, m + t, 16)), tiny) : load16(z + at);
            store16(z + at, before * message);
        }
    }
}

/* Columns [0, count) (count a multiple of TILE16) of one node of one tree, as downward_columns with H = 16; with
 * outer (else NULL), outer[a][c] += Σ_m ratio_m[a] x_m[c]. Each product runs as its own phase over the tile's
 * columns, so that every phase has eight or sixteen independent sums in flight. */
INLINE void downward_node16(float *restrict x, const float *restrict flow, const float *restrict w,
                            const float *restrict wt, float *restrict outer, int64_t count, NodeLeaves leaf) {
    Vec16 sum[16] = {0};                                        /* sum[a]: Σ_m ratio_m[a] x_m */
    for (int64_t m = 0; m < count; m += TILE16) {
        const float *restrict v = x + 16 * m;
        float ratio[TILE16 * 16];
        Vec16 acc[TILE16];
        for (int t = 0; t < TILE16; ++t) acc[t] = v[16 * t] * load16(wt);
        for (int c = 1; c < 16; ++c) {                          /* the messages sent, w x */
            const Vec16 row = load16(wt + 16 * c);
            for (int t = 0; t < TILE16; ++t) acc[t] += v[16 * t + c] * row;
        }
        for (int t = 0; t < TILE16; ++t) store16(ratio + 16 * t, load16(flow + 16 * (m + t)) / acc[t]);
        if (outer)
            for (int t = 0; t < TILE16; ++t) {
                const Vec16 below = load16(v + 16 * t);
                for (int a = 0; a < 16; ++a) sum[a] += ratio[16 * t + a] * below;
            }
        for (int t = 0; t < TILE16; ++t) acc[t] = ratio[16 * t] * load16(w);
        for (int a = 1; a < 16; ++a) {                          /* ratio w */
            const Vec16 row = load16(w + 16 * a);
            for (int t = 0; t < TILE16; ++t) acc[t] += ratio[16 * t + a] * row;
        }
        for (int t = 0; t < TILE16; ++t) {
            store16(x + 16 * (m + t), load16(v + 16 * t) * acc[t]);
            if (leaf.index) count_leaf(leaf, m + t, x + 16 * (m + t), 16);
        }
    }
    if (outer)
        for (int a = 0; a < 16; ++a) store16(outer + 16 * a, load16(outer + 16 * a) + sum[a]);
}
#define PACKED16 1
#else
#define PACKED4 0
#define PACKED16 0
#endif

/* ---------------------------------------------------------------- upward */

/* The largest entry of the H-row x (a vector reduction), clamped at TINY. */
INLINE REAL row_max(const REAL *restrict x, int64_t H) {
    REAL peak = TINY;
#pragma omp simd reduction(max : peak)
    for (int64_t h = 0; h < H; ++h) peak = x[h] > peak ? x[h] : peak;
    return peak;
}

/* The sum of the H-row x (a vector reduction), clamped at TINY. */
INLINE REAL row_sum(const REAL *restrict x, int64_t H) {
    REAL sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t h = 0; h < H; ++h) sum += x[h];
    return sum < TINY ? TINY : sum;
}

/* Divide the H-row x by its sum (clamped at TINY); returns the sum. */
INLINE REAL normalize(REAL *restrict x, int64_t H) {
    const REAL sum = row_sum(x, H);
#pragma omp simd
    for (int64_t h = 0; h < H; ++h) x[h] /= sum;
    return sum;
}

/* wt = w transposed (H x H): wt[c][a] = w[a][c]. */
INLINE void transpose(const REAL *restrict w, REAL *restrict wt, int64_t H) {
    for (int64_t a = 0; a < H; ++a)
        for (int64_t c = 0; c < H; ++c) wt[c * H + a] = w[a * H + c];
}

/* out[t] = Σ_c v[t][c] m[c] for T H-rows v[t] (stride apart) and the H x H matrix m, as axpys over m's rows: the
 * T products run side by side, T independent accumulators sharing each row of m. */
INLINE void row_products(const REAL *restrict v, int64_t stride, const REAL *restrict m, REAL *restrict out,
                         int64_t T, int64_t H) {
    for (int64_t e = 0; e < T * H; ++e) out[e] = 0;
    for (int64_t c = 0; c < H; ++c) {
        const REAL *restrict row = m + c * H;
        for (int64_t t = 0; t < T; ++t) {
            const REAL vc = v[t * stride + c];
#pragma omp simd
            for (int64_t a = 0; a < H; ++a) out[t * H + a] += vc * row[a];
        }
    }
}

/* T columns (rows x and z of the first; the next ones a column stride apart) of one node of one tree: the
 * messages w x (wt: w transposed), divided by their largest entry, are multiplied into the parent's rows z, and the
 * node's rows x are divided by the same (these scales into sums[0..T)), so that w x is then the message sent. With
 * leaf rows (leaf.index not NULL: the parent's first child), z is written as the parent's leaf times the message
 * instead. The products w x run T side by side in out (T*H scratch). */
INLINE void upward_columns(REAL *restrict x, REAL *restrict z, int64_t stride, REAL *restrict sums,
                           const REAL *restrict wt, REAL *restrict out, int64_t T, int64_t H, NodeLeaves leaf) {
    row_products(x, stride, wt, out, T, H);                   /* out = w x (wt: w transposed) */
    for (int64_t t = 0; t < T; ++t) {
        REAL *restrict row = x + t * stride;
        const REAL peak = sums[t] = row_max(out + t * H, H);
        const REAL scale = 1 / peak;
#pragma omp simd
        for (int64_t a = 0; a < H; ++a) {
            row[a] *= scale;
            out[t * H + a] *= scale;                  /* z (out scale), not (z out) scale, which may underflow */
        }
        if (leaf.index) {
            const REAL *restrict before = leaf_row(leaf, t, H);
#pragma omp simd
            for (int64_t a = 0; a < H; ++a) z[t * stride + a] = leaf_value(before[a]) * out[t * H + a];
        } else {
#pragma omp simd
            for (int64_t a = 0; a < H; ++a) z[t * stride + a] *= out[t * H + a];
        }
    }
}

/* Where an upward task's scratch parts start (in REALs, each on a cache line), and its size: w transposed [H, H]
 * and the products [TILE, H] at 0, one node's scales [block columns], the scales' running mantissas [block trees,
 * block columns] and their exponents (int64, as many), a row of ones [H] and the nodes' states (bytes, [D]). */
typedef struct {
    int64_t sums, mantissa, exponent, ones, state, size;
} UpwardScratch;

static UpwardScratch upward_scratch(const Pass *p) {
    const int64_t products = p->block_groups * p->block_columns;
    UpwardScratch layout;
    layout.sums = whole_lines(p->hidden * p->hidden + TILE * p->hidden);
    layout.mantissa = layout.sums + whole_lines(p->block_columns);
    layout.exponent = layout.mantissa + whole_lines(products);
    layout.ones = layout.exponent + whole_lines(products * (int64_t)(sizeof(int64_t) / sizeof(REAL)));
    layout.state = layout.ones + whole_lines(p->hidden);
    layout.size = layout.state + whole_lines((p->nodes + (int64_t)sizeof(REAL) - 1) / (int64_t)sizeof(REAL));
    return layout;
}

/* One task of the upward pass: trees [g0, g1), columns [m0, m1); scratch as upward_scratch lays it out. */
INLINE void upward_task(const Pass *p, int64_t g0, int64_t g1, int64_t m0, int64_t m1, REAL *restrict scratch,
                        int64_t H) {
    const int64_t M = p->columns, D = p->nodes, count = m1 - m0;
    const UpwardScratch layout = upward_scratch(p);
    REAL *restrict wt = scratch, *restrict out = scratch + H * H;
    REAL *restrict sums = scratch + layout.sums;                             /* one node's scales, [count] */
    REAL *restrict mantissa = scratch + layout.mantissa;                     /* [g1 - g0, count] */
    int64_t *restrict exponent = (int64_t *)(scratch + layout.exponent);
    REAL *restrict ones = scratch + layout.ones;
    /* with leaf rows: 0 for a childless node (its leaves written into the values first), 1 for a node whose first
     * child is still to come (that child's step writes the node's leaf times its message), 2 after */
    unsigned char *restrict state = (unsigned char *)(scratch + layout.state);
    for (int64_t e = 0; e < (g1 - g0) * count; ++e) mantissa[e] = 1, exponent[e] = 0;
    const int64_t stride = p->stride_column;
    if (p->leaf_table) {
        for (int64_t h = 0; h < H; ++h) ones[h] = 1;
        memset(state, 0, (size_t)D);
        for (int64_t j = 0; j < D - 1; ++j) state[p->parents[p->order[j]]] = 1;
        prepare_leaves(p, state, ones, g0, g1, m0, m1, H);
    }
    for (int64_t j = 0; j < D - 1; ++j) {
        const int64_t node = p->order[j], parent = p->parents[node];
        const int first = p->leaf_table && state[parent] == 1;
        for (int64_t g = g0; g < g1; ++g) {
            const REAL *w = p->transitions + ((g * (D - 1) + p->rows[node]) * H) * H;
            transpose(w, wt, H);
            REAL *below = row_at(p, g, node, m0), *above = row_at(p, g, parent, m0);
            const NodeLeaves leaf = node_leaves(p, first ? p->leaf_table : NULL, ones, NULL, g, parent, m0);
            int64_t i = 0;                                            /* columns m0 + i */
#if PACKED4
            if (H == 4 && stride == 4) {
                i = count & ~(int64_t)3;
                upward_node4(below, above, sums, wt, i, leaf);
            }
#endif
#if PACKED16
            if (H == 16 && stride == 16) {
                i = count / TILE16 * TILE16;
                upward_node16(below, above, sums, wt, i, leaf);
            }
#endif
            for (; i + TILE <= count; i += TILE)
                upward_columns(below + i * stride, above + i * stride, stride, sums + i, wt, out, TILE, H,
                               leaves_after(leaf, i));
            for (; i < count; ++i)
                upward_columns(below + i * stride, above + i * stride, stride, sums + i, wt, out, 1, H,
                               leaves_after(leaf, i));
            fold_scales(sums, mantissa + (g - g0) * count, exponent + (g - g0) * count, count);
        }
        if (first) state[parent] = 2;
    }
    for (int64_t g = g0; g < g1; ++g) {
        const REAL *weights = p->root_weights + g * H;
        for (int64_t m = m0; m < m1; ++m) {
            REAL *restrict x = row_at(p, g, p->root, m);
            sums[m - m0] = normalize(x, H);
            REAL total = 0;
            for (int64_t h = 0; h < H; ++h) total += x[h] * weights[h];
            p->root_sums[g * M + m] = total < TINY ? TINY : total;
        }
        REAL *own_mantissa = mantissa + (g - g0) * count;
        int64_t *own_exponent = exponent + (g - g0) * count;
        fold_scales(sums, own_mantissa, own_exponent, count);
        for (int64_t i = 0; i < count; ++i)
            p->log_scales[g * M + m0 + i] = (REAL)((double)own_exponent[i] * LN2 + log((double)own_mantissa[i]));
    }
}

#define UPWARD_TASK(suffix, H)                                                                                 \
    static void upward_task_##suffix(const Pass *p, int64_t g0, int64_t g1, int64_t m0, int64_t m1,            \
                                     REAL *scratch) {                                                          \
        upward_task(p, g0, g1, m0, m1, scratch, H);                                                            \
    }
UPWARD_TASK(4, 4)
UPWARD_TASK(8, 8)
UPWARD_TASK(16, 16)
UPWARD_TASK(32, 32)
UPWARD_TASK(64, 64)
UPWARD_TASK(any, p->hidden)

typedef void (*UpwardTask)(const Pass *, int64_t, int64_t, int64_t, int64_t, REAL *);

static UpwardTask upward_for(int64_t hidden) {
    switch (hidden) {
        case 4: return upward_task_4;
        case 8: return upward_task_8;
        case 16: return upward_task_16;
        case 32: return upward_task_32;
        case 64: return upward_task_64;
        default: return upward_task_any;
    }
}

/* ---------------------------------------------------------------- downward */

/* T columns (rows x and flow of the first; the next ones a column stride apart) of one node of one tree: ratio =
 * parent flow / message sent (w x, recomputed; wt: w transposed); when outer is not NULL, outer += Σ_t ratio_t ⊗
 * x_t; then x *= ratio w, the flows (with leaf.index, each added into its observed value's count row). ratio and
 * back are T*H scratch; the T products run side by side. */
INLINE void downward_columns(REAL *restrict x, const REAL *restrict flow, int64_t stride, const REAL *restrict w,
                             const REAL *restrict wt, REAL *restrict outer, REAL *restrict ratio,
                             REAL *restrict back, int64_t T, int64_t H, NodeLeaves leaf) {
    row_products(x, stride, wt, back, T, H);                   /* back = w x, the messages sent */
    for (int64_t t = 0; t < T; ++t)
#pragma omp simd
        for (int64_t a = 0; a < H; ++a) ratio[t * H + a] = flow[t * stride + a] / back[t * H + a];
    if (outer)
        for (int64_t a = 0; a < H; ++a) {
            REAL *restrict line = outer + a * H;
            for (int64_t t = 0; t < T; ++t) {
                const REAL ra = ratio[t * H + a];
#pragma omp simd
                for (int64_t c = 0; c < H; ++c) line[c] += ra * x[t * stride + c];
            }
        }
    row_products(ratio, H, w, back, T, H);                     /* back = ratio w */
    for (int64_t t = 0; t < T; ++t)
#pragma omp simd
        for (int64_t c = 0; c < H; ++c) x[t * stride + c] *= back[t * H + c];
    if (leaf.index)
        for (int64_t t = 0; t < T; ++t) count_leaf(leaf, t, x + t * stride, H);
}

/* One task of the downward pass: trees [g0, g1), columns [m0, m1). Counts are added into transition_counts,
 * root_counts and leaf_counts (any may be NULL); scratch holds 2*H*H + 2*TILE*H numbers. */
INLINE void downward_task(const Pass *p, int64_t g0, int64_t g1, int64_t m0, int64_t m1,
                          REAL *transition_counts, REAL *root_counts, REAL *leaf_counts, REAL *restrict scratch,
                          int64_t H) {
    const int64_t M = p->columns, D = p->nodes;
    REAL *restrict outer = scratch;                   /* Σ_m ratio[m] ⊗ below[m], [H_parent, H_child] */
    REAL *restrict wt = outer + H * H;
    REAL *restrict ratio = wt + H * H;
    REAL *restrict back = ratio + TILE * H;
    const int64_t stride = p->stride_column;
    for (int64_t g = g0; g < g1; ++g) {
        const REAL *weights = p->root_weights + g * H;
        for (int64_t h = 0; h < H; ++h) back[h] = 0;
        for (int64_t m = m0; m < m1; ++m) {
            REAL *restrict x = row_at(p, g, p->root, m);
            const REAL scale = p->root_scales[g * M + m];
            for (int64_t h = 0; h < H; ++h) {
                x[h] = x[h] * weights[h] * scale;
                back[h] += x[h];
            }
        }
        if (root_counts)
            for (int64_t h = 0; h < H; ++h) root_counts[g * H + h] += back[h];
        const NodeLeaves leaf = node_leaves(p, NULL, NULL, leaf_counts, g, p->root, m0);
        if (leaf.index)
            for (int64_t m = m0; m < m1; ++m) count_leaf(leaf, m - m0, row_at(p, g, p->root, m), H);
    }
    REAL *const counted = transition_counts ? outer : NULL;
    if (leaf_counts)
        for (int64_t g = g0; g < g1; ++g)
            for (int64_t v = 0; v < D; ++v) prefetch_rows(p, leaf_counts, 1, g, v, m0, m1);
    for (int64_t j = D - 2; j >= 0; --j) {
        const int64_t node = p->order[j], parent = p->parents[node], row = p->rows[node];
        for (int64_t g = g0; g < g1; ++g) {
            const REAL *restrict w = p->transitions + ((g * (D - 1) + row) * H) * H;
            transpose(w, wt, H);
            REAL *below = row_at(p, g, node, m0);
            const REAL *above = row_at(p, g, parent, m0);
            if (counted)
                for (int64_t e = 0; e < H * H; ++e) outer[e] = 0;
            const int64_t count = m1 - m0;
            const NodeLeaves leaf = node_leaves(p, NULL, NULL, leaf_counts, g, node, m0);
            int64_t i = 0;                                            /* columns m0 + i */
#if PACKED4
            if (H == 4 && stride == 4) {
                i = count & ~(int64_t)3;
                downward_node4(below, above, w, wt, counted, i, leaf);
            }
#endif
#if PACKED16
            if (H == 16 && stride == 16) {
                i = count / TILE16 * TILE16;
                if (counted)                                  /* two copies, each without the other's test */
                    downward_node16(below, above, w, wt, counted, i, leaf);
                else
                    downward_node16(below, above, w, wt, NULL, i, leaf);
            }
#endif
            for (; i + TILE <= count; i += TILE)
                downward_columns(below + i * stride, above + i * stride, stride, w, wt, counted, ratio, back, TILE,
                                 H, leaves_after(leaf, i));
            for (; i < count; ++i)
                downward_columns(below + i * stride, above + i * stride, stride, w, wt, counted, ratio, back, 1, H,
                                 leaves_after(leaf, i));
            if (counted) {
                REAL *restrict counts = transition_counts + ((g * (D - 1) + row) * H) * H;
#pragma omp simd
                for (int64_t e = 0; e < H * H; ++e) counts[e] += w[e] * outer[e];
            }
        }
    }
}

#define DOWNWARD_TASK(suffix, H)                                                                               \
    static void downward_task_##suffix(const Pass *p, int64_t g0, int64_t g1, int64_t m0, int64_t m1,          \
                                       REAL *transition_counts, REAL *root_counts, REAL *leaf_counts,          \
                                       REAL *scratch) {                                                        \
        downward_task(p, g0, g1, m0, m1, transition_counts, root_counts, leaf_counts, scratch, H);             \
    }
DOWNWARD_TASK(4, 4)
DOWNWARD_TASK(8, 8)
DOWNWARD_TASK(16, 16)
DOWNWARD_TASK(32, 32)
DOWNWARD_TASK(64, 64)
DOWNWARD_TASK(any, p->hidden)

typedef void (*DownwardTask)(const Pass *, int64_t, int64_t, int64_t, int64_t, REAL *, REAL *, REAL *, REAL *);

static DownwardTask downward_for(int64_t hidden) {
    switch (hidden) {
        case 4: return downward_task_4;
        case 8: return downward_task_8;
        case 16: return downward_task_16;
        case 32: return downward_task_32;
        case 64: return downward_task_64;
        default: return downward_task_any;
    }
}

/* ---------------------------------------------------------------- entry points */

static Pass make_pass(const int64_t *shape, REAL *values, const int64_t *strides, const int64_t *leaf_index,
                      const int64_t *leaf_trees, const int64_t *leaf_shape, const int64_t *order,
                      const int64_t *parents, const int64_t *rows, int64_t root) {
    Pass p;
    memset(&p, 0, sizeof p);
    p.groups = shape[0], p.nodes = shape[1], p.columns = shape[2], p.hidden = shape[3];
    p.stride_group = strides[0], p.stride_node = strides[1], p.stride_column = strides[2];
    p.values = values;
    p.leaf_index = leaf_index, p.leaf_trees = leaf_trees;
    p.categories = leaf_shape[0], p.stacks = leaf_shape[1] > 0 ? leaf_shape[1] : 1;
    p.order = order, p.parents = parents, p.rows = rows, p.root = root;
    return p;
}

/* Block t of the grid (blocks of trees major): its trees [*g0, *g1) and columns [*m0, *m1). */
static void task_bounds(const Pass *p, const Grid *grid, int64_t t, int64_t *g0, int64_t *g1, int64_t *m0,
                        int64_t *m1) {
    int64_t group = t / grid->column_blocks, column = t % grid->column_blocks;
    *g0 = group * grid->group_block;
    *g1 = *g0 + grid->group_block < p->groups ? *g0 + grid->group_block : p->groups;
    *m0 = column * grid->column_block;
    *m1 = *m0 + grid->column_block < p->columns ? *m0 + grid->column_block : p->columns;
}

/* Task t of the downward pass: blocks [t * blocks_per_task, (t + 1) * blocks_per_task) of the grid, in order. */
static void downward_blocks(const Pass *p, const Grid *grid, DownwardTask task, int64_t t, int64_t blocks_per_task,
                            REAL *transition_counts, REAL *root_counts, REAL *leaf_counts, REAL *scratch) {
    for (int64_t block = t * blocks_per_task; block < (t + 1) * blocks_per_task; ++block) {
        int64_t g0, g1, m0, m1;
        task_bounds(p, grid, block, &g0, &g1, &m0, &m1);
        task(p, g0, g1, m0, m1, transition_counts, root_counts, leaf_counts, scratch);
    }
}

/* The calling thread's number in the current parallel region (0 without OpenMP). */
static int thread_number(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* The upward pass: scales the values in place, writes log_scales and root_sums. With leaf_table (else
 * NULL), the leaves are gathered from it first (see the top of this file; leaf_shape = {K, S, T}). With values
 * NULL (leaf_table needed) no values are kept: each task runs in a block of its own, in cache, and only log_scales
 * and root_sums are written (likelihoods only). Returns 0, -1 when scratch memory could not be allocated (nothing
 * is written then), or -2 for values NULL without leaf_table. */
int NAME(hmmlvd_upward)(const int64_t *shape, REAL *values, const int64_t *value_strides, REAL *log_scales,
                        const REAL *transitions, const REAL *root_weights, REAL *root_sums,
                        const REAL *leaf_table, const int64_t *leaf_index, const int64_t *leaf_trees,
                        const int64_t *leaf_shape, const int64_t *order, const int64_t *parents, const int64_t *rows,
                        int64_t root, int num_threads) {
    Pass p = make_pass(shape, values, value_strides, leaf_index, leaf_trees, leaf_shape, order, parents, rows, root);
    p.log_scales = log_scales, p.transitions = transitions, p.root_weights = root_weights;
    p.root_sums = root_sums, p.leaf_table = leaf_table;
    if (!values && !leaf_table) return -2;
    const int threads = num_threads < 1 ? 1 : num_threads;
    const Grid grid = make_grid(&p, threads);
    p.block_groups = grid.group_block, p.block_columns = grid.column_block;
    const int64_t tasks = grid.group_blocks * grid.column_blocks, H = p.hidden;
    const int64_t work_size = upward_scratch(&p).size;
    const int64_t scratch_size = work_size + (values ? 0 : whole_lines(block_size(&p, &grid)));
    REAL *scratch = allocate(threads * scratch_size, 0);
    if (!scratch) return -1;
    const UpwardTask task = upward_for(H);
#pragma omp parallel num_threads(threads)
    {
        REAL *own = scratch + (int64_t)thread_number() * scratch_size;
#pragma omp for schedule(dynamic, grid.column_blocks)      /* a block of trees at a time: its tables stay in L2 */
        for (int64_t t = 0; t < tasks; ++t) {
            int64_t g0, g1, m0, m1;
            task_bounds(&p, &grid, t, &g0, &g1, &m0, &m1);
            const Pass q = values ? p : in_block(&p, own + work_size, g0, m0, m1);
            task(&q, g0, g1, m0, m1, own);
        }
    }
    free(scratch);
    return 0;
}

/* The downward pass: turns the values of the upward pass into flows in place (root_scales: the root flows over
 * the root sums) and adds the expected counts into transition_counts, root_counts and leaf_counts (any may be
 * NULL; leaf_counts [T, D, K, H] needs leaf_index, and leaf_trees NULL). Returns 0, -1 when scratch memory could
 * not be allocated (nothing is written then), or -2 for leaf_counts without leaf_index or with leaf_trees. */
int NAME(hmmlvd_downward)(const int64_t *shape, REAL *values, const int64_t *value_strides,
                          const REAL *transitions, const REAL *root_weights, const REAL *root_scales,
                          REAL *transition_counts, REAL *root_counts, REAL *leaf_counts,
                          const int64_t *leaf_index, const int64_t *leaf_trees, const int64_t *leaf_shape,
                          const int64_t *order, const int64_t *parents, const int64_t *rows, int64_t root,
                          int num_threads) {
    Pass p = make_pass(shape, values, value_strides, leaf_index, leaf_trees, leaf_shape, order, parents, rows, root);
    p.transitions = transitions, p.root_weights = root_weights;
    p.root_scales = root_scales;
    if (leaf_counts && (!leaf_index || leaf_trees)) return -2;
    const int threads = num_threads < 1 ? 1 : num_threads;
    const Grid grid = make_grid(&p, threads);
    const int64_t H = p.hidden, scratch_size = whole_lines(2 * H * H + 2 * TILE * H);
    /* split: one task per (block of trees, block of columns); else one per block of trees, which owns its counts */
    const int64_t tasks = grid.split ? grid.group_blocks * grid.column_blocks : grid.group_blocks;
    const int64_t blocks_per_task = grid.split ? 1 : grid.column_blocks;
    const int64_t transition_size = p.groups * (p.nodes - 1) * H * H, root_size = p.groups * H;
    const int64_t leaf_size = leaf_counts ? leaf_shape[2] * p.nodes * p.categories * H : 0;
    const int counted = transition_counts || root_counts || leaf_counts;
    const int private_counts = grid.split && grid.column_blocks > 1 && counted;
    const int64_t counted_size = transition_size + root_size + leaf_size;
    const int64_t private_size = private_counts ? whole_lines(counted_size) : 0;
    REAL *scratch = allocate(threads * (scratch_size + private_size), 1);
    if (!scratch) return -1;
    const DownwardTask task = downward_for(H);
#pragma omp parallel num_threads(threads)
    {
        const int thread = thread_number();
        const unsigned float_mode = flush_subnormals();
        REAL *own = scratch + (int64_t)thread * (scratch_size + private_size);
        REAL *own_transitions = transition_counts, *own_root = root_counts, *own_leaves = leaf_counts;
        if (private_counts) {
            own_transitions = transition_counts ? own + scratch_size : NULL;
            own_root = root_counts ? own + scratch_size + transition_size : NULL;
            own_leaves = leaf_counts ? own + scratch_size + transition_size + root_size : NULL;
        }
        if (private_counts) {                 /* static: a thread's sums, and so the totals, the same every call */
#pragma omp for schedule(static)
            for (int64_t t = 0; t < tasks; ++t)
                downward_blocks(&p, &grid, task, t, blocks_per_task, own_transitions, own_root, own_leaves, own);
        } else {                              /* each task owns its counts: any thread may run it */
#pragma omp for schedule(dynamic)
            for (int64_t t = 0; t < tasks; ++t)
                downward_blocks(&p, &grid, task, t, blocks_per_task, own_transitions, own_root, own_leaves, own);
        }
        if (private_counts) {                                 /* sum the threads' counts (implicit barrier above) */
#pragma omp for schedule(static)
            for (int64_t e = 0; e < counted_size; ++e) {
                REAL total = 0;
                for (int other = 0; other < threads; ++other)
                    total += scratch[(int64_t)other * (scratch_size + private_size) + scratch_size + e];
                if (e < transition_size) {
                    if (transition_counts) transition_counts[e] += total;
                } else if (e < transition_size + root_size) {
                    if (root_counts) root_counts[e - transition_size] += total;
                } else {
                    leaf_counts[e - transition_size - root_size] += total;
                }
            }
        }
        restore_float_mode(float_mode);
    }
    free(scratch);
    return 0;
}
