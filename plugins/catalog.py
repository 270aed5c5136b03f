"""mtssl's own plugins, registered by reference: listing them imports none of their code.

Every first-party plugin is an entry point naming one of the objects below,
so it loads through the same door as a third-party package. Each registers its
component as a ``"module:attribute"`` reference that is imported only when the
component is first built, so ``mtssl plugins`` and ``--help`` run without torch.
A test builds every reference, so this table cannot drift from the code.
"""
from __future__ import annotations

from typing import Callable

from mtssl.hookspecs import hookimpl


class CatalogPlugin:
    """One plugin: one ``register_*`` hook that registers one component by reference."""

    def __init__(self, hook: str, name: str, reference: str, aliases: tuple[str, ...] = (), description: str = ""):
        self.component = (name, reference)

        @hookimpl
        def register(register: Callable[..., None]) -> None:
            register(name, reference, aliases=aliases, description=description)

        setattr(self, hook, register)


# -- Backbones -------------------------------------------------------------------------------------
timm = CatalogPlugin("register_backbones", "timm", "mtssl_plugins.backbones.timm_backbone:build",
    description="any timm encoder (features_only); option model=NAME, checkpoint=PATH")
unet = CatalogPlugin("register_backbones", "unet", "mtssl_plugins.backbones.unet:build",
    aliases=("multimix",),
    description="paper encoder: 5 double-conv blocks 16-256, InstanceNorm, LeakyReLU(0.2), dropout 0.25")

# -- Tasks -----------------------------------------------------------------------------------------
cls = CatalogPlugin("register_tasks", "cls", "mtssl_plugins.tasks.classification:ClassificationTask",
    aliases=("classification",),
    description="image classification (pool + FC, cross-entropy); options classes, weight")
seg = CatalogPlugin("register_tasks", "seg", "mtssl_plugins.tasks.segmentation:SegmentationTask",
    aliases=("segmentation",),
    description=("segmentation of one or more structures (U-Net decoder, alpha * Dice); options alpha, dropout, "
                 "channels=1, activation=sigmoid|softmax"))

# -- SSL strategies --------------------------------------------------------------------------------
cps = CatalogPlugin("register_strategies", "cps", "mtssl_plugins.strategies.cps:CrossPseudoSupervision",
    description="cross pseudo supervision with a second network (core's peer); options weight=1.5, rampup=0")
fixmatch = CatalogPlugin("register_strategies", "fixmatch", "mtssl_plugins.strategies.fixmatch:FixMatch",
    description=("pseudo-labels from weak view (conf >= threshold) train strong view; options threshold=0.7, "
                 "weight=0.25"))
fixmatch_dense = CatalogPlugin("register_strategies", "fixmatch-dense",
    "mtssl_plugins.strategies.fixmatch_dense:DenseFixMatch",
    aliases=("fixmatch-seg",),
    description=("pixel-wise FixMatch for masks: weak -> photometric strong of the same pixels; options "
                 "threshold=0.95, weight=1"))
freematch = CatalogPlugin("register_strategies", "freematch", "mtssl_plugins.strategies.freematch:FreeMatch",
    description=("FixMatch with self-adaptive class-wise thresholds (state persists); options weight=1, "
                 "momentum=0.999, fairness=0.01"))
kl = CatalogPlugin("register_strategies", "kl", "mtssl_plugins.strategies.kl_consistency:KLConsistency",
    aliases=("kl-consistency",),
    description=("Bernoulli KL pulling unlabeled masks toward labeled ones; options weight=0.01, pairing=mean|index, "
                 "reduction=mean|sum, preset=paper (beta 0.01, sum)"))
meanteacher = CatalogPlugin("register_strategies", "meanteacher", "mtssl_plugins.strategies.mean_teacher:MeanTeacher",
    aliases=("mean-teacher", "mt"),
    description=("EMA teacher; MSE of probabilities, sigmoid ramp-up; options weight=1, rampup=200, ema=0.99, "
                 "views=aligned|independent"))
mixmatch = CatalogPlugin("register_strategies", "mixmatch", "mtssl_plugins.strategies.mixmatch:MixMatch",
    description=("MixMatch: K weak views, sharpened guesses, mixup, extra forward; options K=2, T=0.5, alpha=0.75, "
                 "weight=75, rampup=500"))
adamatch = CatalogPlugin("register_strategies", "adamatch", "mtssl_plugins.strategies.adamatch:AdaMatch",
    description=("distribution alignment toward the labeled predictions, threshold relative to the labeled "
                 "confidence (state persists); options tau=0.9, weight=1, momentum=0.999"))
flexmatch = CatalogPlugin("register_strategies", "flexmatch", "mtssl_plugins.strategies.flexmatch:FlexMatch",
    description=("FixMatch with class-wise thresholds from each class's learning status (state persists); options "
                 "threshold=0.95, weight=1, momentum=0.99, warmup=true, mapping=convex|linear"))
pseudolabel = CatalogPlugin("register_strategies", "pseudolabel", "mtssl_plugins.strategies.pseudo_label:PseudoLabel",
    aliases=("pseudo-label",),
    description=("confident hard labels of a weak view train that view, weight ramped linearly; options "
                 "threshold=0.95, weight=1, rampup=120, start=0"))
simmatch = CatalogPlugin("register_strategies", "simmatch", "mtssl_plugins.strategies.simmatch:SimMatch",
    description=("pseudo-labels refined by similarity to a bank of labeled embeddings (pooled backbone features), "
                 "and the strong view's similarities match them (state persists); options threshold=0.95, T=0.1, "
                 "alpha=0.9, weight=1, instance_weight=1, bank=100"))
softmatch = CatalogPlugin("register_strategies", "softmatch", "mtssl_plugins.strategies.softmatch:SoftMatch",
    description=("pseudo-labels weighted by a truncated Gaussian of their confidence, uniform alignment (state "
                 "persists); options weight=1, momentum=0.999, n_sigma=2, align=true"))
uda = CatalogPlugin("register_strategies", "uda", "mtssl_plugins.strategies.uda:UDA",
    description=("KL from sharpened confident weak predictions to the strong view; options T=0.4, threshold=0.8, "
                 "weight=1"))
cct = CatalogPlugin("register_strategies", "cct", "mtssl_plugins.strategies.cct:CrossConsistency",
    description=("cross-consistency for masks: auxiliary decoders of its own on features under noise, drop and "
                 "dropout match the main head's clean prediction; options weight=1, rampup=200, noise=0.3, "
                 "dropout=0.3"))
cutmix_seg = CatalogPlugin("register_strategies", "cutmix-seg", "mtssl_plugins.strategies.cutmix_seg:CutMixSeg",
    aliases=("cutmix",),
    description=("box-mixed unlabeled images match the EMA teacher's predictions mixed the same way (masks); "
                 "options weight=1, rampup=0, ema=0.99, area=0.5"))
entropy_min = CatalogPlugin("register_strategies", "entropy-min",
    "mtssl_plugins.strategies.entropy_min:EntropyMinimisation",
    description="per-pixel entropy of unlabeled masks, minimised; options weight=0.1, rampup=200")
uamt = CatalogPlugin("register_strategies", "uamt", "mtssl_plugins.strategies.uamt:UncertaintyMeanTeacher",
    aliases=("ua-mt",),
    description=("uncertainty-aware Mean Teacher for masks: T teacher passes, MSE where their entropy is low "
                 "(threshold ramped); options weight=0.1, rampup=200, ema=0.99, passes=8, threshold_rampup=1000, "
                 "perturb=photometric|none"))
unimatch = CatalogPlugin("register_strategies", "unimatch", "mtssl_plugins.strategies.unimatch:UniMatch",
    description=("UniMatch for masks: weak pseudo-labels train two strong views and the head on dropped-out weak "
                 "features; options threshold=0.95, weight=1, dropout=0.5"))

# -- Task weightings -------------------------------------------------------------------------------
equal = CatalogPlugin("register_weightings", "equal", "mtssl_plugins.weightings.equal:Equal",
    description="plain sum of the task losses (default)")
pcgrad = CatalogPlugin("register_weightings", "pcgrad", "mtssl_plugins.weightings.pcgrad:PCGrad",
    description="project conflicting task gradients on the shared encoder (Yu et al. 2020)")
uncertainty = CatalogPlugin("register_weightings", "uncertainty", "mtssl_plugins.weightings.uncertainty:Uncertainty",
    aliases=("uw",),
    description="learned log-variances, exp(-s)/2*L + s/2 (Kendall et al. 2018); options init=0, lr")
aligned_mtl = CatalogPlugin("register_weightings", "aligned-mtl", "mtssl_plugins.weightings.aligned_mtl:AlignedMTL",
    aliases=("alignedmtl",),
    description="task gradients aligned to an orthogonal equal-norm system via the Gram eigendecomposition "
                "(Senushkin et al. 2023)")
cagrad = CatalogPlugin("register_weightings", "cagrad", "mtssl_plugins.weightings.cagrad:CAGrad",
    description=("conflict-averse gradient: helps the worst task near the average gradient (Liu et al. 2021); "
                 "options c=0.5, rescale=true, iterations=100"))
dwa = CatalogPlugin("register_weightings", "dwa", "mtssl_plugins.weightings.dwa:DWA",
    description=("dynamic weight average: softmax of the tasks' loss ratios (Liu et al. 2019; state persists); "
                 "options T=2, window=50"))
gradnorm = CatalogPlugin("register_weightings", "gradnorm", "mtssl_plugins.weightings.gradnorm:GradNorm",
    description=("learned weights balancing the gradient norms on the last shared layer (Chen et al. 2018); "
                 "options alpha=1.5, lr"))
imtl = CatalogPlugin("register_weightings", "imtl", "mtssl_plugins.weightings.imtl:IMTL",
    aliases=("imtl-g",),
    description="IMTL-G: equal projections of the update on every task's unit gradient (Liu et al. 2021)")
mgda = CatalogPlugin("register_weightings", "mgda", "mtssl_plugins.weightings.mgda:MGDA",
    description=("min-norm point of the task gradients by Frank-Wolfe (Sener & Koltun 2018); options "
                 "normalize=none|l2|loss|loss+, iterations=100, ub=false (MGDA-UB)"))
nash_mtl = CatalogPlugin("register_weightings", "nash-mtl", "mtssl_plugins.weightings.nash_mtl:NashMTL",
    aliases=("nashmtl",),
    description="Nash bargaining over the update, G'G a = 1/a by damped Newton (Navon et al. 2022); option "
                "iterations=20")
rlw = CatalogPlugin("register_weightings", "rlw", "mtssl_plugins.weightings.rlw:RLW",
    description=("random weights each step from the run's seed (Lin et al. 2022); option "
                 "distribution=normal|dirichlet"))

# -- Multi-task architectures --------------------------------------------------------------------
mmoe = CatalogPlugin("register_architectures", "mmoe", "mtssl_plugins.architectures.mmoe:MMoE",
    description=("multi-gate mixture of experts: K encoders, each task mixes their pyramids with its own softmax "
                 "gate of the image (Ma et al. 2018); option experts=2"))
mtan = CatalogPlugin("register_architectures", "mtan", "mtssl_plugins.architectures.mtan:MTAN",
    description=("task attention: per task, sigmoid masks over the shared features at every level (Liu et al. "
                 "2019)"))
shared = CatalogPlugin("register_architectures", "shared", "mtssl.model.sharing:HardSharing",
    aliases=("hard",),
    description="hard parameter sharing: every task reads the one backbone's pyramid (default)")

# -- Bridges ---------------------------------------------------------------------------------------
mask = CatalogPlugin("register_bridges", "mask", "mtssl_plugins.bridges.mask:MaskBridge",
    description=("the source's per-pixel probabilities (a segmentation) into the target head; cls pools its features "
                 "under them; option stride (default: deepest)"))
saliency = CatalogPlugin("register_bridges", "saliency", "mtssl_plugins.bridges.saliency:SaliencyBridge",
    description=("|d max logit / d input| of the source task, with the image, into the target decoder; options "
                 "stride=8, normalize=true"))

# -- Data sources ----------------------------------------------------------------------------------
folders = CatalogPlugin("register_sources", "folders", "mtssl_plugins.sources.folders:build",
    description=("folders:ROOT, one sub-folder per class (sorted names = classes); options channels=1|3, group=REGEX "
                 "(patient key from the file name)"))
jsrt = CatalogPlugin("register_sources", "jsrt", "mtssl_plugins.sources.jsrt:build",
    description=("jsrt:IMAGES[:masks=SCR_ROOT][:structures=lungs+heart+clavicles], .IMG raw or PNG + SCR masks, one "
                 "channel per structure"))
kermany = CatalogPlugin("register_sources", "kermany", "mtssl_plugins.sources.kermany:build",
    description=("kermany:chest_xray[:split=train|val|test], NORMAL=0 / PNEUMONIA=1 folders, split by child "
                 "(group=REGEX overrides)"))
montgomery = CatalogPlugin("register_sources", "montgomery", "mtssl_plugins.sources.montgomery:build",
    description="montgomery:ROOT, CXR_png/ + ManualMask/{left,right}Mask/ (masks, or TB labels)")
nih = CatalogPlugin("register_sources", "nih", "mtssl_plugins.sources.nih:build",
    description="nih:ROOT[:classes=No Finding|Pneumonia], Data_Entry_2017.csv + images")
pairs = CatalogPlugin("register_sources", "pairs", "mtssl_plugins.sources.pairs:build",
    description=("pairs:IMAGES_DIR,MASKS_DIR, masks matched by stem (a.png <- a_mask.png); options channels=1|3, "
                 "group=REGEX"))
shenzhen = CatalogPlugin("register_sources", "shenzhen", "mtssl_plugins.sources.shenzhen:build",
    description="shenzhen:ROOT, CXR_png/ + mask/<stem>_mask.png (masks, or TB labels)")
synthetic = CatalogPlugin("register_sources", "synthetic", "mtssl_plugins.sources.synthetic:build",
    description=("built-in chest phantom; options n, domain=0..3, prevalence, size, structures=lungs|lungs+heart "
                 "(masks)"))

# -- Loggers ---------------------------------------------------------------------------------------
mlflow = CatalogPlugin("register_loggers", "mlflow", "mtssl_plugins.loggers.mlflow_logger:MLflowLogger",
    description=("MLflow tracking: config as params, metrics, the run directory as artifacts (pip install "
                 "'mtssl[mlflow]')"))
tensorboard = CatalogPlugin("register_loggers", "tensorboard",
    "mtssl_plugins.loggers.tensorboard_logger:TensorBoardLogger",
    description=("TensorBoard event files in RUN/tensorboard: scalars, validation metrics and images (pip install "
                 "'mtssl[tensorboard]')"))
