"""The LTX-2 family (video + audio): ``engine`` (LTX2Engine), ``request`` (the checked call),
``stages`` (the shared stage pieces) and ``recipes`` (one file per pipeline), ``plan`` (memory),
and the family's components: ``denoise`` (schedule, guidance, the Denoiser, keyframe tokens),
``samplers`` (euler, gradient estimation, res2s) and ``audio_input`` (audio conditioning).
Nothing here is imported by the LTX-Video family, nor the other way round."""
