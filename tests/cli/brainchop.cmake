# brainchop's zoo through the command line (examples/models/brainchop): NiiVue's conform, a
# package on an input that is not conformed, menu variants, and broken model folders. Inputs
# come from the checkout (examples/data/t1_crop.nii.gz, brainchop's 256^3 demo T1); the
# comparison with NiiVue's own conformed file needs the shared folder (exit 77 without it).
set(_bc "${PROJECT_SOURCE_DIR}/examples/models/brainchop")
set(_t1 "${PROJECT_SOURCE_DIR}/examples/data/t1_crop.nii.gz")

function(voxinfer_cli_brainchop_test name script)
  cmake_parse_arguments(ARG "" "PASS" "" ${ARGN})
  add_test(NAME ${name} COMMAND sh -c "${script}" WORKING_DIRECTORY "${VOXINFER_CLI_WORK}")
  set_tests_properties(${name} PROPERTIES LABELS cli SKIP_RETURN_CODE 77
                       ENVIRONMENT "VOX=$<TARGET_FILE:voxinfer_cli>;DATA=${_data};BC=${_bc};T1=${_t1}")
  if(ARG_PASS)
    set_tests_properties(${name} PROPERTIES PASS_REGULAR_EXPRESSION "${ARG_PASS}")
  endif()
endfunction()

voxinfer_cli_brainchop_test(cli_convert_conform_help [[$VOX convert --help]] PASS "--conform")

# convert --conform gives NiiVue's grid: 256^3, 1 mm, LIA, uint8.
voxinfer_cli_brainchop_test(cli_convert_conform_grid [[
  rm -f bc_conf.nii.gz; $VOX convert --conform $DATA/brainchop_zoo/input/conform/MNI152_2009_template.nii.gz bc_conf.nii.gz 2>/dev/null \
    || { test -e $DATA/brainchop_zoo/input/conform || exit 77; exit 1; }
  $VOX info bc_conf.nii.gz --json | tr -d ' \n']] PASS "\"orientation\":\"LIA\".*\"size\":\\[256,256,256\\]")

# ... and the same voxels and geometry as NiiVue's own conformed file (info's statistics and
# geometry of both agree; the test of the library compares every voxel).
voxinfer_cli_brainchop_test(cli_convert_conform_equals_niivue [[
  d=$DATA/brainchop_zoo/input/conform; test -e $d/MNI152_2009_template_conformed_niivue.nii.gz || exit 77
  rm -f bc_conf2.nii.gz; $VOX convert --conform $d/MNI152_2009_template.nii.gz bc_conf2.nii.gz || exit 1
  a=$($VOX info bc_conf2.nii.gz --json | grep -v '"input"'); b=$($VOX info $d/MNI152_2009_template_conformed_niivue.nii.gz --json | grep -v '"input"')
  test "$a" = "$b" || { echo "info differs:"; echo "$a"; echo "$b"; exit 1; }; echo same]] PASS "same")

# A 4D (two-volume) input: a clear error, exit status 2, nothing written.
voxinfer_cli_brainchop_test(cli_conform_and_segment_4d_input_exit2 [[
  python3 -c "
import struct, sys
h = bytearray(348); struct.pack_into('<i', h, 0, 348)
struct.pack_into('<8h', h, 40, 4, 4, 4, 4, 2, 1, 1, 1)
struct.pack_into('<hh', h, 70, 2, 8)
struct.pack_into('<8f', h, 76, 1, 1, 1, 1, 1, 0, 0, 0)
struct.pack_into('<f', h, 108, 352.0); struct.pack_into('<f', h, 112, 1.0)
h[344:348] = b'n+1\0'
open('bc_4d.nii', 'wb').write(bytes(h) + bytes(4) + bytes(range(128)))" || exit 77
  rm -f bc_4d_out.nii.gz bc_4d_lab.nii.gz
  $VOX convert --conform bc_4d.nii bc_4d_out.nii.gz 2> bc_4d.err; rc=$?
  test $rc -eq 2 && test ! -e bc_4d_out.nii.gz && test $(wc -l < bc_4d.err) -eq 1 || { cat bc_4d.err; exit 1; }
  $VOX segment --model $BC/model5_gw_ae -i bc_4d.nii -o bc_4d_lab.nii.gz 2> bc_4d.err; rc=$?
  test $rc -eq 2 && test ! -e bc_4d_lab.nii.gz && test $(wc -l < bc_4d.err) -eq 1 && cat bc_4d.err]] PASS "2 channel")

# A package on an input that is not conformed (the demo T1 stored as float32): NiiVue's
# conform first, labels on the input's grid and, beside them, on the conformed grid.
voxinfer_cli_brainchop_test(cli_brainchop_segment_unconformed_input [[
  rm -f bc_f32.nii.gz bc_lab.nii.gz bc_lab_conformed.nii.gz
  $VOX convert $T1 bc_f32.nii.gz --type float32 && $VOX segment --model $BC/model5_gw_ae -i bc_f32.nii.gz -o bc_lab.nii.gz --threads 2 2> bc_seg.err || { cat bc_seg.err; exit 1; }
  test -s bc_lab.nii.gz && test -s bc_lab_conformed.nii.gz && $VOX info bc_lab_conformed.nii.gz --json | tr -d ' \n']]
  PASS "\"orientation\":\"LIA\".*\"size\":\\[256,256,256\\]")

# brainchop's menu: every entry is a package or a variant of one, listed with brainchop's names.
voxinfer_cli_brainchop_test(cli_models_lists_brainchop_menu [[$VOX models $BC]]
  PASS "model21_104class/pipeline.e15.json +brainchop model21_104class: Aparc\\+Aseg 104 \\(Low Mem, Slow\\)")
voxinfer_cli_brainchop_test(cli_models_json_counts_entries [[
  n=$($VOX models $BC --json | grep -c '"kind": "\(package\|variant\)"'); echo "entries=$n"]] PASS "entries=17")

# Broken model folders: exit status 3, one line on stderr, no output.
voxinfer_cli_brainchop_test(cli_brainchop_missing_shard_exit3 [[
  rm -rf bc_noshard bc_ms.nii.gz && cp -r $BC/model5_gw_ae bc_noshard && rm bc_noshard/group1-shard1of1.bin
  $VOX segment --model bc_noshard -i $T1 -o bc_ms.nii.gz 2> bc_ms.err; rc=$?
  test $rc -eq 3 && test ! -e bc_ms.nii.gz && test $(wc -l < bc_ms.err) -eq 1 && cat bc_ms.err]] PASS "group1-shard1of1.bin")
voxinfer_cli_brainchop_test(cli_brainchop_short_shard_exit3 [[
  rm -rf bc_short bc_ss.nii.gz && cp -r $BC/model5_gw_ae bc_short && head -c 1000 $BC/model5_gw_ae/group1-shard1of1.bin > bc_short/group1-shard1of1.bin
  $VOX segment --model bc_short -i $T1 -o bc_ss.nii.gz 2> bc_ss.err; rc=$?
  test $rc -eq 3 && test ! -e bc_ss.nii.gz && test $(wc -l < bc_ss.err) -eq 1 && cat bc_ss.err]] PASS "shorter than the manifest")
voxinfer_cli_brainchop_test(cli_brainchop_long_shard_exit3 [[
  rm -rf bc_long bc_ls.nii.gz && cp -r $BC/model5_gw_ae bc_long && head -c 64 $T1 >> bc_long/group1-shard1of1.bin
  $VOX segment --model bc_long -i $T1 -o bc_ls.nii.gz 2> bc_ls.err; rc=$?
  test $rc -eq 3 && test ! -e bc_ls.nii.gz && test $(wc -l < bc_ls.err) -eq 1 && cat bc_ls.err]] PASS "bytes")
voxinfer_cli_brainchop_test(cli_brainchop_unknown_layer_exit3 [[
  rm -rf bc_layer bc_ul.nii.gz && cp -r $BC/model5_gw_ae bc_layer && sed -i 's/"class_name": "Activation"/"class_name": "FancyLayer"/g' bc_layer/model.json
  $VOX segment --model bc_layer -i $T1 -o bc_ul.nii.gz 2> bc_ul.err; rc=$?
  test $rc -eq 3 && test ! -e bc_ul.nii.gz && test $(wc -l < bc_ul.err) -eq 1 && cat bc_ul.err]] PASS "FancyLayer")

# A Brain_Extraction entry (10: model5_gw_ae's labels made a mask): the mask, and the input
# inside it on the input's grid and on the conformed grid.
voxinfer_cli_brainchop_test(cli_brainchop_brain_extraction_outputs [[
  rm -f bc_ex_f32.nii.gz bc_ex.nii.gz bc_ex_conformed.nii.gz bc_ex_extracted.nii.gz bc_ex_conformed_extracted.nii.gz
  $VOX convert $T1 bc_ex_f32.nii.gz --type float32 && $VOX segment --model $BC/model5_gw_ae/pipeline.e10.json -i bc_ex_f32.nii.gz -o bc_ex.nii.gz --threads 2 2> bc_ex.err || { cat bc_ex.err; exit 1; }
  test -s bc_ex_conformed.nii.gz && test -s bc_ex_extracted.nii.gz && test -s bc_ex_conformed_extracted.nii.gz || exit 1
  $VOX info bc_ex.nii.gz --json | tr -d ' \n'; echo; $VOX info bc_ex_conformed_extracted.nii.gz --json | tr -d ' \n']]
  PASS "\"max\":1\\.0.*\"orientation\":\"LIA\".*\"size\":\\[256,256,256\\]")
