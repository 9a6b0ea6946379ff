/*
 * Runtime for xenkvm's conformance guests: freestanding 64-bit Xen PV test
 * kernels (no libc). Values are from Xen's public headers (xen.h,
 * arch-x86/xen-x86_64.h, vcpu.h, event_channel.h, grant_table.h, memory.h,
 * callback.h, sched.h); see also docs in /work/shared/design/research/pv-boot.md.
 *
 * Each guest defines test_main(); the runtime calls it after mapping
 * shared_info and installing a catch-all trap table, then prints
 *   CONFORMANCE-DONE <p> passed, <f> failed, <x> xfail
 * and powers the domain off.
 */
#ifndef CONF_H
#define CONF_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;
typedef signed char s8;
typedef short s16;
typedef int s32;
typedef long s64;

#define barrier() __asm__ volatile("" ::: "memory")
#define NOINLINE __attribute__((noinline))
#define PAGE_ALIGNED __attribute__((aligned(4096)))

/* Errno values (xen/include/public/errno.h). */
#define EPERM 1
#define ENOENT 2
#define EFAULT 14
#define EBUSY 16
#define EEXIST 17
#define EINVAL 22
#define ENOSYS 38
#define ETIME 62

/* Hypercall numbers. */
#define HC_set_trap_table 0
#define HC_mmu_update 1
#define HC_stack_switch 3
#define HC_memory_op 12
#define HC_multicall 13
#define HC_update_va_mapping 14
#define HC_xen_version 17
#define HC_console_io 18
#define HC_grant_table_op 20
#define HC_vm_assist 21
#define HC_iret 23
#define HC_vcpu_op 24
#define HC_set_segment_base 25
#define HC_mmuext_op 26
#define HC_sched_op 29
#define HC_callback_op 30
#define HC_event_channel_op 32

#define DOMID_SELF 0x7ff0

#define FLAT_KERNEL_CS 0xe033 /* == FLAT_RING3_CS64 */
#define FLAT_KERNEL_SS 0xe02b
#define FLAT_USER_CS 0xe033
#define FLAT_USER_SS 0xe02b

#define UVMF_NONE 0
#define UVMF_TLB_FLUSH 1
#define UVMF_INVLPG 2

#define MMUEXT_PIN_L1_TABLE 0
#define MMUEXT_PIN_L4_TABLE 3
#define MMUEXT_UNPIN_TABLE 4
#define MMUEXT_NEW_USER_BASEPTR 15

#define _PAGE_PRESENT 0x001UL
#define _PAGE_RW 0x002UL
#define _PAGE_USER 0x004UL
#define _PAGE_ACCESSED 0x020UL
#define _PAGE_DIRTY 0x040UL
#define PTE_ADDR_MASK 0x000ffffffffff000UL

#define VIRQ_TIMER 0
#define VIRQ_DEBUG 1

/* start_info (x86_64 layout). */
struct start_info {
	char magic[32];
	u64 nr_pages;
	u64 shared_info; /* machine address */
	u32 flags;
	u32 _pad0;
	u64 store_mfn;
	u32 store_evtchn;
	u32 _pad1;
	u64 console_mfn;
	u32 console_evtchn;
	u32 _pad2;
	u64 pt_base;
	u64 nr_pt_frames;
	u64 mfn_list;
	u64 mod_start;
	u64 mod_len;
	char cmd_line[1024];
	u64 first_p2m_pfn;
	u64 nr_p2m_frames;
};

struct vcpu_time_info {
	u32 version;
	u32 pad0;
	u64 tsc_timestamp;
	u64 system_time;
	u32 tsc_to_system_mul;
	s8 tsc_shift;
	u8 flags;
	u8 pad1[2];
};

struct vcpu_info {
	u8 evtchn_upcall_pending;
	u8 evtchn_upcall_mask;
	u8 _pad[6];
	u64 evtchn_pending_sel;
	u64 cr2;
	u64 _arch_pad;
	struct vcpu_time_info time;
};

struct shared_info {
	struct vcpu_info vcpu_info[32];
	u64 evtchn_pending[64];
	u64 evtchn_mask[64];
	u32 wc_version;
	u32 wc_sec;
	u32 wc_nsec;
	u32 wc_sec_hi;
};

struct trap_info {
	u8 vector;
	u8 flags; /* bits 0-1: DPL, bit 2: mask events */
	u16 cs;
	u32 _pad;
	u64 address;
};

struct mmu_update {
	u64 ptr;
	u64 val;
};

struct mmuext_op {
	u32 cmd;
	u32 _pad;
	u64 arg1;
	u64 arg2;
};

struct multicall_entry {
	u64 op;
	s64 result;
	u64 args[6];
};

/*
 * What the trap stubs save. The Xen bounce frame (pv-boot.md 4.2) follows
 * `code`: RCX, R11, [error code], RIP, CS, RFLAGS, RSP, SS.
 */
struct regs {
	u64 r15, r14, r13, r12, r11, r10, r9, r8, rdi, rsi, rbp, rdx, rcx, rbx, rax;
	u64 code; /* vector (or VEC_EVENT/VEC_SYSCALL) | HAS_ERR */
	u64 f_rcx, f_r11;
	u64 w[6];
};
#define VEC_EVENT 256
#define VEC_SYSCALL 257
#define HAS_ERR 0x10000UL
static inline unsigned int regs_vector(const struct regs *r) { return r->code & 0xffff; }
static inline int regs_has_err(const struct regs *r) { return (r->code & HAS_ERR) != 0; }
/* The architectural part of the frame: [0]=RIP [1]=CS [2]=RFLAGS [3]=RSP [4]=SS. */
static inline u64 *regs_iret(struct regs *r) { return regs_has_err(r) ? &r->w[1] : &r->w[0]; }
/* Address of the bounce frame's first word (RCX). */
static inline u64 regs_frame_base(struct regs *r) { return (u64)&r->f_rcx; }

typedef void (*trap_fn)(struct regs *r);
extern trap_fn trap_hooks[258];
/* Entry stubs (head.S). */
extern char trap_stub_0[], trap_stub_table[], event_stub[], syscall_stub[];
void *trap_stub(unsigned int vector);

/* Hypercalls: number in rax, args in rdi rsi rdx r10 r8, via SYSCALL. */
static inline long hypercall_syscall(long nr, long a1, long a2, long a3, long a4, long a5)
{
	register long r10 __asm__("r10") = a4;
	register long r8 __asm__("r8") = a5;
	__asm__ volatile("push %%rcx\n\tpush %%r11\n\tsyscall\n\tpop %%r11\n\tpop %%rcx"
			 : "+a"(nr), "+D"(a1), "+S"(a2), "+d"(a3), "+r"(r10), "+r"(r8)
			 :
			 : "r9", "memory");
	return nr;
}

#ifdef FREESTANDING
/* The page the domain builder filled (HYPERCALL_PAGE note): call stub nr. */
extern char hypercall_page[4096];
static inline long hypercall(long nr, long a1, long a2, long a3, long a4, long a5)
{
	register long r10 __asm__("r10") = a4;
	register long r8 __asm__("r8") = a5;
	void *stub = hypercall_page + 32 * nr;
	__asm__ volatile("call *%[stub]"
			 : "+a"(nr), "+D"(a1), "+S"(a2), "+d"(a3), "+r"(r10), "+r"(r8)
			 : [stub] "r"(stub)
			 : "rcx", "r9", "r11", "memory");
	return nr;
}
#else
#define hypercall hypercall_syscall
#endif
#define HC0(n) hypercall((n), 0, 0, 0, 0, 0)
#define HC1(n, a) hypercall((n), (long)(a), 0, 0, 0, 0)
#define HC2(n, a, b) hypercall((n), (long)(a), (long)(b), 0, 0, 0)
#define HC3(n, a, b, c) hypercall((n), (long)(a), (long)(b), (long)(c), 0, 0)
#define HC4(n, a, b, c, d) hypercall((n), (long)(a), (long)(b), (long)(c), (long)(d), 0)

/* Runtime state. */
extern struct start_info *si;
extern volatile struct shared_info *shinfo;
extern u64 *p2m;
#ifdef FREESTANDING
#define VIRT_BASE 0UL /* no VIRT_BASE note: Xen's default */
#else
#define VIRT_BASE 0xffffffff80000000UL
#endif

static inline u64 va_to_pfn(const void *va) { return ((u64)va - VIRT_BASE) >> 12; }
static inline u64 va_to_mfn(const void *va) { return p2m[va_to_pfn(va)]; }
static inline void *mfn_to_va(u64 mfn) { return (void *)(VIRT_BASE + (mfn << 12)); } /* identity p2m */

static inline u64 rdtsc(void)
{
	u32 lo, hi;
	__asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi)::"memory");
	return ((u64)hi << 32) | lo;
}

/* Library. */
void *memset(void *d, int c, unsigned long n);
void *memcpy(void *d, const void *s, unsigned long n);
int memcmp(const void *a, const void *b, unsigned long n);
unsigned long strlen(const char *s);
void console_write(const char *s, unsigned long n);
void printk(const char *fmt, ...);
__attribute__((noreturn)) void poweroff(void);
long update_va_mapping(void *va, u64 pte, u64 flags);
long mmuext(u32 cmd, u64 arg1, u64 arg2);
long set_traps(const struct trap_info *t);
long register_callback(u16 type, u16 flags, void *addr);
u64 now_ns(void);
/* Locate the L1 entry mapping va in the current (boot) tables: machine address, and its VA. */
u64 l1e_maddr(const void *va);
volatile u64 *l1e_ptr(const void *va);
/* The level-`level` entry (4 = L4 ... 1 = L1) on the walk for va; 0 if not reached. */
volatile u64 *pte_ptr(const void *va, int level);
/* Machine address of a location in the initial mapping. */
u64 maddr_of(volatile const void *p);

/* Test reporting. */
void begin(const char *name);
void expect(int ok, const char *fmt, ...);
void end(void);
/* Whether the running sub-test has failed so far. */
int test_failed(void);
/* End a sub-test that is known to fail because of a monitor bug. */
void end_xfail(const char *reason);
__attribute__((noreturn)) void done(void);
#define EXPECT_EQ(a, b)                                                                  \
	do {                                                                             \
		u64 a_ = (u64)(a), b_ = (u64)(b);                                        \
		expect(a_ == b_, "%s = %ld (%#lx), want %ld (%#lx) (%s:%d)", #a, a_, a_, b_, b_, \
		       __FILE__, __LINE__);                                                      \
	} while (0)
#define EXPECT(c) expect(!!(c), "%s is false (%s:%d)", #c, __FILE__, __LINE__)

void test_main(void);

#endif
