# The pgps workflow: from planned nnU-Net sizes to the article's tables and figures.
#
#   snakemake --cores 2 --configfile config.yaml     (make demo)
#
# Rules live in workflow/rules/<stage>.smk; they call the pgps CLI or a thin script in
# workflow/scripts/ that calls pgps.report. The configuration is documented and validated by
# workflow/schemas/config.schema.yaml.

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


config.setdefault("demo", {})  # optional section: validate() fills in its defaults
validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/schedules.smk"
include: "workflow/rules/demo.smk"


rule all:
    input:
        schedule_targets(),
        demo_targets(),
    default_target: True
