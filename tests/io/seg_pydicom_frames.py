# Prints one line per frame of a DICOM SEG as pydicom decodes it, for the SEG tests to
# compare with the label map: segment number, ImagePositionPatient (x y z), the number of
# set pixels and the sum of their row-major indices in the frame.
import sys

import numpy as np
import pydicom

ds = pydicom.dcmread(sys.argv[1])
pixels = ds.pixel_array
if pixels.ndim == 2:
    pixels = pixels[np.newaxis]
for i, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
    segment = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
    x, y, z = (float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient)
    on = np.flatnonzero(pixels[i] >= (1 if ds.SegmentationType == "BINARY" else 128))
    print(segment, repr(x), repr(y), repr(z), on.size, int(on.sum()))
