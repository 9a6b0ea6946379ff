/* Grant tables (v1): query_size, setup_table, mapping the table frames. */
#include "conf.h"

#define GNTTABOP_setup_table 2
#define GNTTABOP_query_size 6
#define GNTTABOP_set_version 8
#define GNTTABOP_get_version 10
#define GNTST_okay 0
#define GTF_permit_access 1

struct query_size {
	u16 dom;
	u16 pad;
	u32 nr_frames;
	u32 max_nr_frames;
	s16 status;
};

struct setup_table {
	u16 dom;
	u16 pad;
	u32 nr_frames;
	s16 status;
	u16 pad2[3];
	u64 frame_list; /* guest handle of xen_pfn_t */
};

struct grant_entry_v1 {
	u16 flags;
	u16 domid;
	u32 frame;
};

static char table_va[2][4096] PAGE_ALIGNED;
static char granted[4096] PAGE_ALIGNED;

static long gnttab_op(int cmd, void *arg, int count)
{
	return HC3(HC_grant_table_op, cmd, arg, count);
}

void test_main(void)
{
	struct query_size q = { DOMID_SELF, 0, 0, 0, -99 };
	long rc;

	begin("gnttab.query_size");
	rc = gnttab_op(GNTTABOP_query_size, &q, 1);
	EXPECT_EQ(rc, 0);
	EXPECT_EQ(q.status, GNTST_okay);
	expect(q.max_nr_frames >= 1 && q.nr_frames <= q.max_nr_frames,
	       "nr_frames %u, max_nr_frames %u", q.nr_frames, q.max_nr_frames);
	end();

	begin("gnttab.version");
	struct {
		u32 version;
	} ver = { 1 };
	EXPECT_EQ(gnttab_op(GNTTABOP_set_version, &ver, 1), 0);
	struct {
		u16 dom, pad;
		u32 version;
	} gv = { DOMID_SELF, 0, 0 };
	EXPECT_EQ(gnttab_op(GNTTABOP_get_version, &gv, 1), 0);
	EXPECT_EQ(gv.version, 1);
	end();

	begin("gnttab.setup_table");
	u64 frames[2] = { 0, 0 };
	struct setup_table st = { DOMID_SELF, 0, 2, -99, { 0 }, (u64)frames };
	rc = gnttab_op(GNTTABOP_setup_table, &st, 1);
	EXPECT_EQ(rc, 0);
	EXPECT_EQ(st.status, GNTST_okay);
	expect(frames[0] != 0 && frames[1] != 0 && frames[0] != frames[1], "frames %lx %lx",
	       frames[0], frames[1]);
	end();

	begin("gnttab.setup_table_stable");
	u64 again[1] = { 0 };
	struct setup_table st1 = { DOMID_SELF, 0, 1, -99, { 0 }, (u64)again };
	EXPECT_EQ(gnttab_op(GNTTABOP_setup_table, &st1, 1), 0);
	EXPECT_EQ(st1.status, GNTST_okay);
	EXPECT_EQ(again[0], frames[0]);
	end();

	begin("gnttab.setup_table_too_many");
	u64 many[1] = { 0 };
	struct setup_table stm = { DOMID_SELF, 0, q.max_nr_frames + 1, 0, { 0 }, (u64)many };
	EXPECT_EQ(gnttab_op(GNTTABOP_setup_table, &stm, 1), 0);
	EXPECT_EQ(stm.status, -1 /* GNTST_general_error */);
	end();

	begin("gnttab.map_and_write");
	for (int i = 0; i < 2; i++) {
		rc = update_va_mapping(table_va[i], (frames[i] << 12) | _PAGE_PRESENT | _PAGE_RW,
				       UVMF_INVLPG);
		expect(rc == 0, "update_va_mapping(frame %lx) = %ld", frames[i], rc);
	}
	if (!test_failed()) {
		volatile struct grant_entry_v1 *g = (volatile struct grant_entry_v1 *)table_va[0];
		/* Entries 0-7 are reserved for the toolstack; use 8 and the last one of frame 1. */
		g[8].domid = 0;
		g[8].frame = va_to_mfn(granted);
		barrier();
		g[8].flags = GTF_permit_access;
		EXPECT_EQ(g[8].flags, GTF_permit_access);
		EXPECT_EQ(g[8].frame, va_to_mfn(granted));
		volatile struct grant_entry_v1 *g1 = (volatile struct grant_entry_v1 *)table_va[1];
		g1[511].frame = 0x1234;
		EXPECT_EQ(g1[511].frame, 0x1234);
		g[8].flags = 0;
		g1[511].frame = 0;
	}
	end();
}
