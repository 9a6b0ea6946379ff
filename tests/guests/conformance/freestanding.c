/*
 * A freestanding PV kernel as Mini-OS and unikernels are built: linked at
 * 1 MiB (virtual = physical, freestanding.ld), with no VIRT_BASE, no
 * PADDR_OFFSET and no ENTRY note, and a HYPERCALL_PAGE note. Built with
 * -DFREESTANDING: every hypercall of the runtime goes through the page.
 */
#include "conf.h"

#define XENVER_version 0
#define LOAD_ADDR 0x100000UL

extern char _start[], _end[];
extern u64 boot_rsp, boot_rsi;

/* The entry point is e_entry, the start of the image at 1 MiB. */
static void test_entry(void)
{
	begin("entry_is_e_entry");
	EXPECT_EQ((u64)_start, LOAD_ADDR);
	EXPECT_EQ((u64)hypercall_page & 0xfff, 0);
	EXPECT((u64)hypercall_page > LOAD_ADDR && (u64)hypercall_page < (u64)_end);
	end();
}

/* VIRT_BASE 0: pfn n is mapped at VA n * 4096, the image at its physical place. */
static void test_identity_mapping(void)
{
	begin("virt_base_0_identity_mapping");
	volatile u64 *e = l1e_ptr(_start);
	EXPECT(e != 0);
	if (e)
		EXPECT_EQ((*e & PTE_ADDR_MASK) >> 12, p2m[LOAD_ADDR >> 12]);
	EXPECT_EQ(p2m[LOAD_ADDR >> 12], LOAD_ADDR >> 12);
	/* Page 0 is RAM mapped at VA 0 (the padding below the kernel). */
	e = l1e_ptr((const void *)0);
	EXPECT(e != 0 && (*e & _PAGE_PRESENT));
	/* The builder's registers and tables lie after the image, in the low half. */
	EXPECT_EQ(boot_rsi, (u64)si);
	EXPECT(boot_rsi >= (u64)_end && boot_rsi < (1UL << 30));
	EXPECT_EQ(boot_rsi & 0xfff, 0);
	EXPECT(boot_rsp > boot_rsi && boot_rsp < (1UL << 30));
	EXPECT(si->pt_base > boot_rsi && si->pt_base < boot_rsp);
	EXPECT(si->mfn_list >= (u64)_end && si->mfn_list < boot_rsi);
	end();
}

#define HC_iret 23

/*
 * The builder filled Xen's 64-bit stubs: push %rcx; push %r11; mov $nr, %eax;
 * syscall; pop %r11; pop %rcx; ret. The iret stub pushes %rax too and does
 * not return.
 */
static void test_hypercall_page(void)
{
	static const u8 call[] = { 0x51, 0x41, 0x53, 0xb8, 0, 0, 0, 0, 0x0f, 0x05, 0x41, 0x5b, 0x59, 0xc3 };
	static const u8 iret[] = { 0x51, 0x41, 0x53, 0x50, 0xb8, HC_iret, 0, 0, 0, 0x0f, 0x05 };
	begin("hypercall_page_filled");
	for (u32 nr = 0; nr < 128; nr++) {
		const u8 *p = (const u8 *)hypercall_page + 32 * nr;
		int ok;
		if (nr == HC_iret) {
			ok = memcmp(p, iret, sizeof(iret)) == 0;
		} else {
			u32 imm = p[4] | p[5] << 8 | p[6] << 16 | (u32)p[7] << 24;
			ok = memcmp(p, call, 4) == 0 && imm == nr &&
			     memcmp(p + 8, call + 8, sizeof(call) - 8) == 0;
		}
		expect(ok, "stub %u: %x %x %x %x %x %x", nr, p[0], p[1], p[2], p[3], p[4], p[8]);
	}
	/* Through the page and by a bare SYSCALL: the same answer. */
	long via_page = HC2(HC_xen_version, XENVER_version, 0);
	long via_syscall = hypercall_syscall(HC_xen_version, XENVER_version, 0, 0, 0, 0);
	EXPECT(via_page > 0);
	EXPECT_EQ(via_page, via_syscall);
	end();
}

static void test_start_info(void)
{
	static const char want[] = "freestanding-test";
	begin("start_info");
	EXPECT(memcmp(si->magic, "xen-3.0-x86_64", 15) == 0);
	EXPECT_EQ(si->nr_pages, 64UL << 8); /* --memory 64 */
	EXPECT(memcmp(si->cmd_line, want, sizeof(want)) == 0);
	end();
}

void test_main(void)
{
	printk("FREESTANDING hello from a PV kernel at %p: no VIRT_BASE, ENTRY or "
	       "PADDR_OFFSET note, hypercalls through the page at %p\n",
	       (u64)_start, (u64)hypercall_page);
	test_entry();
	test_identity_mapping();
	test_hypercall_page();
	test_start_info();
}
