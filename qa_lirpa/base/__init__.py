"""The ground floor of qa_lirpa: small pieces that every other module may import.

Modules here import only the standard library, numpy, torch and other ``qa_lirpa.base`` modules,
never anything of ours above them (``tests/test_floor.py`` checks it). What lives here:

    errors    QaLirpaError, the base of every error qa_lirpa raises on purpose; UserError
    verdict   Verdict, the answer to "does some input in the box violate the property?"
    files     atomic writes (temp file in the same folder, fsync, os.replace)
    samples   the sample-range syntax of the command line ("0-99", "0:100", "3,7,10-12")
    device    resolve_device("auto" | "cpu" | "cuda:0" | torch.device | None)
    deadline  Deadline, a time budget on the monotonic clock that is passed down as one object
    vnnlib    InputSpec, OutputSpec and the VNN-LIB reader/writer
"""
