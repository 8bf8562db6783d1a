-- Forward each stable study to covidct once. covidct's results come back into the same study
-- and make it stable again: a study that already holds covidct's SEG is not sent again.
function OnStableStudy(studyId, tags, metadata)
  for _, series in ipairs(ParseJson(RestApiGet('/studies/' .. studyId .. '/series'))) do
    local main = series['MainDicomTags']
    if main['Modality'] == 'SEG' and string.sub(main['SeriesDescription'] or '', 1, 7) == 'covidct' then
      return
    end
  end
  print('forwarding study ' .. studyId .. ' to covidct')
  RestApiPost('/modalities/covidct/store', DumpJson({Resources = {studyId}, Asynchronous = true}))
end
