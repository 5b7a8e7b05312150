# The pgps workflow: from planned nnU-Net sizes to the article's tables and figures.
#
#   snakemake --cores 2 --configfile config.yaml     (make demo)
#   snakemake --profile workflow/profiles/slurm --configfile workflow/configs/article.yaml
#
# Rules live in workflow/rules/<stage>.smk; they call the pgps CLI or a thin script in
# workflow/scripts/ that calls pgps.report. The configuration is documented and validated by
# workflow/schemas/config.schema.yaml.

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


config.setdefault("demo", {})  # optional sections: validate() fills in their defaults
config.setdefault("article", {})
config.setdefault("cdl", {})
config.setdefault("study", {})
validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/schedules.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/cdl_common.smk"
include: "workflow/rules/cdl.smk"
include: "workflow/rules/heldout.smk"
include: "workflow/rules/study_common.smk"
include: "workflow/rules/study.smk"


# Cheap bookkeeping and downloads (cluster compute nodes often lack internet) run on the submit host.
localrules:
    all,
    article_partial,
    schedule,
    render_schedules,
    download,
    manifest,
    collect,
    heldout_manifest,
    amos22_report,
    study,
    study_split,
    study_manifest,
    study_render,


rule all:
    input:
        schedule_targets(),
        demo_targets(),
        article_targets(),
        cdl_targets(),
        heldout_targets(),
        study_targets() if STUDY["enabled"] else [],
    default_target: True


rule study:
    """The synthetic study of the article's four claims (docs/pages/explanation/study.md)."""
    input:
        study_targets(),


rule article_partial:
    """Collect and render what the article's grid has finished so far (no training)."""
    input:
        collection_outputs("finished") if ARTICLE["enabled"] else [],
