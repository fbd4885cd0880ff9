# Included by the Makefile: which kernel the module is built for and the guests boot, and
# everything of the built kernels (debug, lean).  The pins are configs/kernel-pin.yaml, read by
# kernel/pin.sh; the check of the build tree is kernel/check-build.sh, the kernel build
# p2pkpvm.kernel.kbuild.
#
# PIN=<name> (6.1, 6.12; default: the file's default): the Debian kernel, passed to every
# Python job as --pin (never through the environment).  KERNEL=stock (default): that pin's Debian image.  KERNEL=lean: the
# pin's source with configs/kconfig/guest.config (`make lean-kernel`, cached).  KERNEL=debug:
# the sanitizer build of `make kernel`.  An explicit KDIR= still wins for the stock build.
PIN      ?=
PIN_NAMES   := $(shell kernel/pin.sh names)
PIN_DEFAULT := $(shell kernel/pin.sh name)
PIN_NAME    := $(shell kernel/pin.sh name $(PIN))
ifeq ($(PIN_NAME),)
$(error PIN=$(PIN) is not a kernel pin of configs/kernel-pin.yaml (pins: $(PIN_NAMES)))
endif
ABI      := $(shell kernel/pin.sh abi $(PIN_NAME))
# '' for the default pin, -6.12 for another: part of the names of its build output
PIN_TAG  := $(if $(filter $(PIN_DEFAULT),$(PIN_NAME)),,-$(PIN_NAME))

KERNEL   ?= stock
ifeq ($(filter stock lean debug,$(KERNEL)),)
$(error KERNEL=$(KERNEL): expected stock, lean or debug)
endif
STOCK_KDIR := /lib/modules/$(ABI)/build
DEBUG_KDIR  = $(shell $(CLI) --pin $(PIN_NAME) kernel path || echo debug-kernel-not-built)
LEAN_KDIR   = $(shell $(CLI) --pin $(PIN_NAME) kernel path --flavour guest || echo lean-kernel-not-built)
ifeq ($(KERNEL)$(origin KDIR),debugundefined)
KDIR      = $(DEBUG_KDIR)
endif
ifeq ($(KERNEL)$(origin KDIR),leanundefined)
KDIR      = $(LEAN_KDIR)
endif
KDIR     ?= $(STOCK_KDIR)
VM_TEST_BUILD := all crashme

# Where p2pkp.ko and crashme.ko are built: in the work tree for the stock kernel of the
# default pin (what `make check` and the fast loop use), else from copies of their sources in
# out/<kernel><tag>-module and out/<kernel><tag>-crashme (out/stock-6.12-module,
# out/debug-module), so that the builds for different kernels never mix.  The harness finds
# them by the same rule (p2pkpvm.kernel.choice.module_dir).
BUILD_NAME  := $(KERNEL)$(PIN_TAG)
MODULE_SRC  := p2pkp.c p2pkp.h p2pkp_compat.h Kbuild
CRASHME_SRC := vmtests/crashme/crashme.c vmtests/crashme/Kbuild
ifeq ($(BUILD_NAME),stock)
MODULE_DIR  := $(CURDIR)
CRASHME_DIR := $(CURDIR)/vmtests/crashme
COPY_MODULE  = true
COPY_CRASHME = true
else
MODULE_DIR  := $(CURDIR)/out/$(BUILD_NAME)-module
CRASHME_DIR := $(CURDIR)/out/$(BUILD_NAME)-crashme
COPY_MODULE  = mkdir -p $(MODULE_DIR) && cp -p $(MODULE_SRC) $(MODULE_DIR)/
COPY_CRASHME = mkdir -p $(CRASHME_DIR) && cp -p $(CRASHME_SRC) $(CRASHME_DIR)/
endif

# Builds the pin's linux-source with configs/kconfig/{guest,debug}.config into
# $(P2PKP_CACHE:-/var/cache/p2pkp)/kernel, keyed by source version + config hash: a second
# run is instant.
kernel: venv
	$(CLI) --pin $(PIN_NAME) kernel build

# The lean guest kernel: configs/kconfig/guest.config only (KERNEL=lean), cached the same way.
lean-kernel: venv
	$(CLI) --pin $(PIN_NAME) kernel build --flavour guest

# The module and crashme built against a built kernel's tree (debug, lean): `make
# KERNEL=debug module` under another name.
debug-module lean-module: %-module:
	$(MAKE) --no-print-directory KERNEL=$* module

debug-crashme lean-crashme: %-crashme:
	$(MAKE) --no-print-directory KERNEL=$* crashme
