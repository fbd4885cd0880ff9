# P2PKP: module, tools, VM harness.  `make help` lists the targets.
#
# Everything that needs the pinned kernel or the Python environment depends on
# `deps`, which is idempotent and quick once done.

ABI      := $(shell kernel/pin.sh abi)
VENV     ?= .venv
PY       := $(VENV)/bin/python
KERNEL   ?= stock
# ---- debug kernel (issue 6): KDIR selection --------------------------------
# KERNEL=debug builds against the cached debug tree of `make kernel`
# (tools/p2pkpvm/kbuild.py prints its path); an explicit KDIR= still wins.
ifeq ($(filter stock debug,$(KERNEL)),)
$(error KERNEL=$(KERNEL): expected stock or debug)
endif
ifeq ($(KERNEL)$(origin KDIR),debugundefined)
KDIR     := $(shell PATH=$(CURDIR)/$(VENV)/bin:$$PATH PYTHONPATH=$(CURDIR)/tools \
		$(PY) -m p2pkpvm.kbuild path || echo debug-kernel-not-built)
endif
# ---- end debug kernel --------------------------------------------------------
KDIR     ?= /lib/modules/$(ABI)/build
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONPATH := $(CURDIR)/tools
PYTEST   := $(PY) -m pytest
PYTEST_ARGS ?=
VMS      ?= 2

.PHONY: all module tools deps venv vm-test vm-test-long vm-shell demo check unit w1 \
	checkpatch lint clean help crashme kernel debug-module debug-crashme \
	bench bench-tools lossbench

all: module tools bench-tools

help:
	@echo "make            build p2pkp.ko (against the pinned kernel) and tools/"
	@echo "make deps       install the pinned kernel, host tools and .venv (idempotent)"
	@echo "make vm-test    deps + build + the whole suite (unit tests, then VMs)"
	@echo "make vm-test-long  the long campaigns (marker 'long')"
	@echo "make vm-shell VMS=n  interactive shells on n networked guests, module loaded"
	@echo "make demo       boot 3 guests, send one file from vm1 to vm2 and vm3"
	@echo "make check      checkpatch --strict, W=1 build, ruff, mypy, unit tests"
	@echo "make clean      remove build output"
	@echo "make bench [QUICK=1]  P2PKP vs baselines on 4 guests -> results/<ts>, docs/results"
	@echo "make lossbench  goodput + retransmission ratio, 64 MiB to 3 peers at 0/1/5% loss"
	@echo "make kernel     build the debug kernel (KASAN, UBSAN, lockdep, kmemleak; cached)"
	@echo "make vm-test KERNEL=debug  the suite on the debug kernel (module in out/debug-module)"
	@echo "Variables: KERNEL=stock|debug  KDIR=<build tree>  VMS=<n>  PYTEST_ARGS='-k multipeer'  P2PKP_ACCEL=kvm|tcg"

module: p2pkp.c p2pkp.h p2pkp_compat.h Kbuild
	@kernel/check-build.sh $(KDIR)
	$(MAKE) -C $(KDIR) M=$(CURDIR) modules

tools:
	$(MAKE) -C tools

$(VENV)/.stamp: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

venv: $(VENV)/.stamp

deps: venv
	$(PY) -m p2pkpvm.deps install

# KERNEL=debug: the module is built into out/debug-module (p2pkp.ko in the work
# tree stays the stock build) and the guests boot the debug bzImage.
ifeq ($(KERNEL),debug)
VM_TEST_BUILD := tools bench-tools debug-module debug-crashme
else
VM_TEST_BUILD := all crashme
endif

vm-test: deps
	$(MAKE) $(VM_TEST_BUILD)
	$(PYTEST) tools/tests vmtests -m "not long" --kernel $(KERNEL) $(PYTEST_ARGS)

vm-test-long: deps
	$(MAKE) $(filter-out crashme debug-crashme,$(VM_TEST_BUILD))
	$(PYTEST) vmtests -m long --kernel $(KERNEL) $(PYTEST_ARGS)

vm-shell: deps
	$(MAKE) all
	$(PY) -m p2pkpvm shell --vms $(VMS)

demo: deps
	$(MAKE) all
	$(PY) -m p2pkpvm demo

unit: venv
	$(PYTEST) tools/tests $(PYTEST_ARGS)

# The module, its UAPI header and the test-only crashme module.  Ignored:
# CONST_STRUCT (p2pkp_ops.family follows the `family` parameter, see p2pkp.c);
# in p2pkp_compat.h only, what a compat header is for (version tests, the
# idmap typedef).
CHECKPATCH_FILES := p2pkp.c p2pkp.h vmtests/crashme/crashme.c
CHECKPATCH_COMPAT_IGNORE := LINUX_VERSION_CODE,CONSTANT_COMPARISON,NEW_TYPEDEFS
checkpatch: deps
	@cp=$$($(PY) -m p2pkpvm.deps checkpatch) && for f in $(CHECKPATCH_FILES); do \
		echo "checkpatch --strict $$f"; \
		$$cp --no-tree --strict --quiet --ignore CONST_STRUCT -f $$f || exit 1; \
	done && echo "checkpatch --strict p2pkp_compat.h" && \
	$$cp --no-tree --strict --quiet --ignore $(CHECKPATCH_COMPAT_IGNORE) -f p2pkp_compat.h

lint: venv
	$(VENV)/bin/ruff check tools vmtests
	$(VENV)/bin/ruff format --check tools vmtests
	$(VENV)/bin/mypy

# W=1 from scratch so that every warning is seen; any warning fails.
w1: deps
	@kernel/check-build.sh $(KDIR)
	$(MAKE) -C $(KDIR) M=$(CURDIR) clean >/dev/null
	$(MAKE) -C $(KDIR) M=$(CURDIR) W=1 modules 2>&1 | tee .w1.log
	$(MAKE) -C $(KDIR) M=$(CURDIR)/vmtests/crashme clean >/dev/null
	$(MAKE) -C $(KDIR) M=$(CURDIR)/vmtests/crashme W=1 modules 2>&1 | tee -a .w1.log
	@! grep -E 'warning:|error:' .w1.log || { echo "W=1 build has warnings"; exit 1; }
	@rm -f .w1.log

check: checkpatch w1 lint unit
	$(MAKE) -C tools

bench-tools:
	$(MAKE) -C tools/bench

# Benchmarks (issue 5) and loss measurements (issue 4): numbers, never assertions.
QUICK ?=
BENCH_ARGS ?=
LOSSBENCH_ARGS ?=
bench: deps
	$(MAKE) all
	$(PY) -m p2pkpvm.bench $(if $(QUICK),--quick) $(BENCH_ARGS)

lossbench: deps
	$(MAKE) all
	$(PY) -m p2pkpvm lossbench $(LOSSBENCH_ARGS)

crashme:
	@kernel/check-build.sh $(KDIR)
	$(MAKE) -C $(KDIR) M=$(CURDIR)/vmtests/crashme modules

clean:
	-[ -f $(KDIR)/Makefile ] && $(MAKE) -C $(KDIR) M=$(CURDIR) clean
	-[ -f $(KDIR)/Makefile ] && $(MAKE) -C $(KDIR) M=$(CURDIR)/vmtests/crashme clean
	-$(MAKE) -C tools clean
	-$(MAKE) -C tools/bench clean
	rm -rf .pytest_cache .mypy_cache .ruff_cache out/debug-module out/debug-crashme

# ---- debug kernel (issue 6) ---------------------------------------------------
# Builds the pinned linux-source with configs/kconfig/{guest,debug}.config into
# $(P2PKP_CACHE:-/var/cache/p2pkp)/kernel, keyed by source version + config
# hash: a second run is instant.  `make KERNEL=debug` then builds the module
# against it.
kernel: venv
	$(PY) -m p2pkpvm.kbuild build

# The module and crashme built against the debug tree from copies of their
# sources, so that the stock p2pkp.ko / crashme.ko in the work tree stay as
# they are.  `pytest --kernel debug` loads out/debug-module/p2pkp.ko.
DEBUG_KDIR = $(shell PATH=$(CURDIR)/$(VENV)/bin:$$PATH PYTHONPATH=$(CURDIR)/tools \
		$(PY) -m p2pkpvm.kbuild path || echo debug-kernel-not-built)
debug-module: p2pkp.c p2pkp.h p2pkp_compat.h Kbuild
	@kernel/check-build.sh $(DEBUG_KDIR)
	mkdir -p out/debug-module
	cp p2pkp.c p2pkp.h p2pkp_compat.h Kbuild out/debug-module/
	$(MAKE) -C $(DEBUG_KDIR) M=$(CURDIR)/out/debug-module modules

debug-crashme: vmtests/crashme/crashme.c
	@kernel/check-build.sh $(DEBUG_KDIR)
	mkdir -p out/debug-crashme
	cp vmtests/crashme/crashme.c vmtests/crashme/Kbuild out/debug-crashme/
	$(MAKE) -C $(DEBUG_KDIR) M=$(CURDIR)/out/debug-crashme modules
# ---- end debug kernel --------------------------------------------------------
