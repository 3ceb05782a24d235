"""Fashion-MNIST pipeline: four DVC stages (``stages/``) on shared code (``core/``) and the model code
(``model/``), plus the commands around them (``commands/``). Run by ``dvc repro`` or the Prefect flow."""
